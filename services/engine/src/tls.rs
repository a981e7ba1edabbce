//! Where TLS clients find the certificates they trust.
//!
//! OpenSSL is compiled into the binary (vendored), so its built-in
//! certificate directory is the build's, not the host's: without
//! `ssl.ca.location` a TLS connection to a cluster signed by a public CA would
//! trust nothing. `probe` makes librdkafka look in the usual places of the
//! host (`/etc/ssl/certs`, `/etc/pki/tls`, ...). A CA given in the config
//! (`ssl.ca.location`, `ssl.ca.pem`) is used as it is.

use rdkafka::config::ClientConfig;

/// Sets `ssl.ca.location = probe` for a TLS connection that names no CA.
pub fn trust_store_default(c: &mut ClientConfig) {
    let tls = c
        .get("security.protocol")
        .is_some_and(|p| p.to_ascii_uppercase().ends_with("SSL"));
    let named = ["ssl.ca.location", "ssl.ca.pem", "ssl.ca.certificate.stores"]
        .iter()
        .any(|k| c.get(k).is_some());
    if tls && !named {
        c.set("ssl.ca.location", "probe");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_without_a_ca_probes_the_host_and_a_given_ca_is_kept() {
        let mut c = ClientConfig::new();
        c.set("security.protocol", "SASL_SSL");
        trust_store_default(&mut c);
        assert_eq!(c.get("ssl.ca.location"), Some("probe"));

        let mut c = ClientConfig::new();
        c.set("security.protocol", "ssl").set("ssl.ca.location", "/run/ca.pem");
        trust_store_default(&mut c);
        assert_eq!(c.get("ssl.ca.location"), Some("/run/ca.pem"));

        let mut c = ClientConfig::new();
        c.set("security.protocol", "SASL_PLAINTEXT");
        trust_store_default(&mut c);
        assert_eq!(c.get("ssl.ca.location"), None);
    }
}
