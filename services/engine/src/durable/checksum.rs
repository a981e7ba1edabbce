//! Checksum: the snapshot file's SHA-256, taken as its body is written and
//! as it is read back.
//!
//! In: the bytes a writer or a reader passes through. Out: their count (told
//! to a progress callback as they pass) and their SHA-256. Keeps nothing
//! past one write or read. Reading hashes on a thread of its own beside the
//! decode ([`read_hashed`]).

use std::io::{BufReader, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use sha2::{Digest, Sha256};

/// Hashes and counts the bytes written through it, and reports how many so
/// far.
pub(super) struct Hashing<T, F> {
    inner: T,
    sha: Sha256,
    bytes: u64,
    progress: F,
}

impl<T, F: FnMut(u64)> Hashing<T, F> {
    pub(super) fn new(inner: T, progress: F) -> Self {
        Hashing {
            inner,
            sha: Sha256::new(),
            bytes: 0,
            progress,
        }
    }

    /// The writer back, the SHA-256 of what passed and how many bytes.
    pub(super) fn finish(self) -> (T, Vec<u8>, u64) {
        (self.inner, self.sha.finalize().to_vec(), self.bytes)
    }

    fn passed(&mut self, buf: &[u8]) {
        self.sha.update(buf);
        self.bytes += buf.len() as u64;
        (self.progress)(self.bytes);
    }
}

impl<T: Write, F: FnMut(u64)> Write for Hashing<T, F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.passed(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Counts the bytes read through it, reports how many so far, and hands
/// each read's bytes to a hashing thread ([`hash_aside`]): the file's
/// SHA-256 took 6% of a 1M restore's one decoding thread (session 23's
/// profile) and runs beside it now. The buffers go round between the two
/// threads: a read allocates [`HASH_BUFFERS`] of them.
pub(super) struct HashedAside<T, F> {
    inner: T,
    bytes: u64,
    progress: F,
    full: SyncSender<Vec<u8>>,
    empty: Receiver<Vec<u8>>,
}

/// Buffers between the reading and the hashing thread: how far the hash may
/// fall behind the decode, in buffers of the reader.
const HASH_BUFFERS: usize = 4;

impl<T: Read, F: FnMut(u64)> Read for HashedAside<T, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            let stopped = || std::io::Error::other("the snapshot's hashing thread stopped");
            let mut aside = self.empty.recv().map_err(|_| stopped())?;
            aside.clear();
            aside.extend_from_slice(&buf[..n]);
            self.full.send(aside).map_err(|_| stopped())?;
            self.bytes += n as u64;
            (self.progress)(self.bytes);
        }
        Ok(n)
    }
}

/// The hashing thread's side: the SHA-256 of every buffer it is handed, in
/// order, until the reader goes; each buffer goes back for the next read.
fn hash_aside(full: Receiver<Vec<u8>>, empty: SyncSender<Vec<u8>>) -> Vec<u8> {
    let mut sha = Sha256::new();
    for b in full {
        sha.update(&b);
        // The reader may be gone (it stopped at an error): nothing to hand back.
        let _ = empty.send(b);
    }
    sha.finalize().to_vec()
}

/// Runs `body` over `inner`, read through a buffer of `buffer` bytes while
/// a thread of its own hashes every byte read; returns what `body` returned,
/// how many bytes were read and their SHA-256. An error of `body` wins (the
/// hashing thread ends with the reader); `failed` is the error when the
/// hashing thread itself fails.
pub(super) fn read_hashed<T: Read, F: FnMut(u64), R, E>(
    inner: T,
    buffer: usize,
    progress: F,
    body: impl FnOnce(&mut BufReader<HashedAside<T, F>>) -> Result<R, E>,
    failed: impl FnOnce() -> E,
) -> Result<(R, u64, Vec<u8>), E> {
    let (full_tx, full_rx) = sync_channel::<Vec<u8>>(HASH_BUFFERS);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(HASH_BUFFERS);
    for _ in 0..HASH_BUFFERS {
        let _ = empty_tx.send(Vec::with_capacity(buffer));
    }
    std::thread::scope(|s| {
        let hasher = s.spawn(move || hash_aside(full_rx, empty_tx));
        let aside = HashedAside {
            inner,
            bytes: 0,
            progress,
            full: full_tx,
            empty: empty_rx,
        };
        let mut r = BufReader::with_capacity(buffer, aside);
        let out = body(&mut r)?;
        let bytes = r.into_inner().bytes;
        // The reader is gone: the hashing thread ends with the last buffer.
        let sha = hasher.join().map_err(|_| failed())?;
        Ok((out, bytes, sha))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash taken beside the reader is the one taken in one go, over
    /// reads of every size the buffer makes; the progress hears the count.
    #[test]
    fn reading_beside_a_hashing_thread_gives_the_whole_bodys_hash_and_count() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut heard = 0;
        let body = |r: &mut BufReader<_>| {
            let mut back = Vec::new();
            r.read_to_end(&mut back).map(|_| back)
        };
        let (back, bytes, sha) = read_hashed(
            &data[..],
            4096,
            |n| heard = n,
            body,
            || std::io::Error::other("hashing"),
        )
        .unwrap();
        assert_eq!(back, data);
        assert_eq!((bytes, heard), (100_000, 100_000));
        assert_eq!(sha, Sha256::digest(&data).to_vec());
    }

    /// A reader that stops at an error ends the hashing thread too: the
    /// error comes back, nothing waits.
    #[test]
    fn an_error_of_the_reader_comes_back_and_the_hashing_thread_ends() {
        let data = vec![1u8; 10_000];
        let body = |r: &mut BufReader<_>| {
            let mut some = [0u8; 100];
            r.read_exact(&mut some)?;
            Err::<(), _>(std::io::Error::other("damaged"))
        };
        let e = read_hashed(&data[..], 1024, |_| {}, body, || std::io::Error::other("hashing")).unwrap_err();
        assert_eq!(e.to_string(), "damaged");
    }
}
