//! Repository checks that `make lint` runs.
//!
//! `xtask layout [ROOT]`: for every crate under `ROOT/services/` (default: the
//! current directory), checks the rules of [`layout`] over its `src/` and exits
//! with 1 listing each violation, or prints one summary line per crate.

mod layout;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("layout") => {
            let root = args.next().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            layout_check(&root)
        }
        _ => Err(anyhow::anyhow!("usage: xtask layout [ROOT]")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn layout_check(root: &Path) -> anyhow::Result<()> {
    let services = root.join("services");
    let mut crates: Vec<PathBuf> = std::fs::read_dir(&services)
        .with_context(|| format!("reading {}", services.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("src").is_dir())
        .collect();
    crates.sort();
    let mut violations = Vec::new();
    for dir in &crates {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut sources = Vec::new();
        collect(&dir.join("src"), &dir.join("src"), &mut sources)?;
        let (found, m) = layout::check_crate(&format!("services/{name}"), &sources, layout::Limits::default());
        println!(
            "services/{name}: {} modules, longest file {} lines ({}), longest fn {} lines ({})",
            m.modules, m.longest_file.0, m.longest_file.1, m.longest_fn.0, m.longest_fn.1
        );
        violations.extend(found);
    }
    if violations.is_empty() {
        return Ok(());
    }
    for v in &violations {
        eprintln!("layout: {v}");
    }
    bail!("{} layout violation(s)", violations.len())
}

fn collect(src: &Path, dir: &Path, out: &mut Vec<layout::Source>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(src, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let rel_path = path
                .strip_prefix(src)
                .with_context(|| format!("{} is outside {}", path.display(), src.display()))?
                .to_string_lossy()
                .replace('\\', "/");
            out.push(layout::Source { rel_path, text });
        }
    }
    Ok(())
}
