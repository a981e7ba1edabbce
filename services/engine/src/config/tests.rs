use onejourney_core::ids::IdentityLimits;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

#[test]
fn defaults_parse_and_validate() {
    let s = Settings::defaults().unwrap();
    assert_eq!(s.topics.web_clicks, "web-clicks");
    assert_eq!(s.http.addr.port(), 9100);
    assert_eq!(s.decide.actions.len(), 12);
    assert_eq!(
        (s.decide.explore, s.decide.holdout_share, s.decide.min_expected_value),
        (true, 0.1, 0.5)
    );
    assert_eq!(s.topics.action_outcomes, "action-outcomes");
    assert_eq!(s.ingest.max_message_bytes, 1 << 20);
}

#[test]
fn environment_and_flags_override_in_order() {
    let s = Settings::load(
        None,
        env(&[
            ("ONEJOURNEY__KAFKA__BROKERS", "10.0.0.1:9092"),
            ("ONEJOURNEY__KAFKA__GROUP_ID", "g-env"),
        ]),
        &Overrides {
            group_id: Some("g-cli".into()),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(s.kafka.brokers, "10.0.0.1:9092");
    assert_eq!(s.kafka.group_id, "g-cli");
}

#[test]
fn the_default_namespace_table_is_the_contracts() {
    let s = Settings::defaults().unwrap();
    assert_eq!(s.identity.namespaces, Namespaces::default_rules());
    assert_eq!(*s.namespaces().unwrap().limits(), IdentityLimits::default());
    // check-config prints the table, and what it prints reads back the same.
    let text = s.to_masked_toml().unwrap();
    assert!(text.contains("customer_id") && text.contains("card_token"), "{text}");
    let back: Settings = toml::from_str(&text).unwrap();
    assert_eq!(back.identity.namespaces, Namespaces::default_rules());
    let bad = Settings::load(
        None,
        env(&[("ONEJOURNEY__IDENTITY__SHARED_DEVICE_MAX_PERSONS", "0")]),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(bad.to_string().contains("identity"), "{bad}");
}

#[test]
fn input_limits_come_from_ingest_and_timers() {
    let s = Settings::defaults().unwrap();
    let l = s.input_limits();
    assert_eq!(l.max_amount, 1e9);
    assert_eq!(l.max_future_skew, Duration::from_secs(300));
    assert_eq!(
        l.max_event_age,
        Duration::ZERO,
        "no horizon by default: rebuilds replay old history"
    );
    let bad = Settings::load(
        None,
        env(&[("ONEJOURNEY__INGEST__MAX_AMOUNT", "0")]),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(bad.to_string().contains("ingest.max_amount"), "{bad}");
}

#[test]
fn a_file_replaces_or_extends_the_namespace_table() {
    let dir = std::env::temp_dir().join(format!("oj-config-ns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("c.toml");
    std::fs::write(
        &f,
        "[identity]\n\
         namespaces = [\n\
           { name = \"email_sha256\", kind = \"person\", priority = 80 },\n\
           { name = \"phone_sha256\", kind = \"person\", priority = 70 },\n\
         ]\n\
         [[identity.extra_namespaces]]\n\
         name = \"member_no\"\n\
         kind = \"person\"\n\
         priority = 20\n\
         reaches = [\"store\"]\n",
    )
    .unwrap();
    let s = Settings::load(Some(&f), env(&[]), &Overrides::default()).unwrap();
    let ns = s.namespaces().unwrap();
    assert_eq!(ns.names(), vec!["email_sha256", "phone_sha256", "member_no"]);
    let member = ns.lookup("member_no").unwrap();
    assert_eq!(ns.routes(member), [onejourney_core::vocab::ContactChannel::Store]);
}

#[test]
fn erase_tokens_are_named_distinct_and_not_the_read_token() {
    let load = |pairs: &[(&str, &str)]| Settings::load(None, env(pairs), &Overrides::default());
    let s = load(&[
        ("ONEJOURNEY__HTTP__BEARER_TOKEN", "read-1"),
        ("ONEJOURNEY__HTTP__ERASE_TOKENS__DPO", "erase-1"),
    ])
    .unwrap();
    assert_eq!(s.http.erase_tokens.get("dpo").map(String::as_str), Some("erase-1"));
    assert!(!s.to_masked_toml().unwrap().contains("erase-1"), "masked");
    assert!(
        Settings::defaults().unwrap().http.erase_tokens.is_empty(),
        "none by default"
    );
    let same = load(&[
        ("ONEJOURNEY__HTTP__BEARER_TOKEN", "read-1"),
        ("ONEJOURNEY__HTTP__ERASE_TOKENS__DPO", "read-1"),
    ])
    .unwrap_err();
    assert!(same.to_string().contains("http.erase_tokens"), "{same}");
    let shared = load(&[
        ("ONEJOURNEY__HTTP__ERASE_TOKENS__A", "t"),
        ("ONEJOURNEY__HTTP__ERASE_TOKENS__B", "t"),
    ])
    .unwrap_err();
    assert!(shared.to_string().contains("share"), "{shared}");
}

#[test]
fn unknown_keys_are_errors() {
    let err = Settings::load(None, env(&[("ONEJOURNEY__KAFKA__BROKRES", "x")]), &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("brokres"), "{err}");
}

#[test]
fn bad_values_name_their_key() {
    let err = Settings::load(
        None,
        env(&[("ONEJOURNEY__INGEST__MAX_MESSAGE_BYTES", "0")]),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("ingest.max_message_bytes"), "{err}");
    let err = Settings::load(
        None,
        env(&[("ONEJOURNEY__TOPICS__CHURN_RISK", "web-clicks")]),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("topics"), "{err}");
    let err = Settings::load(
        None,
        env(&[("ONEJOURNEY__HTTP__ADDR", "nowhere")]),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("addr"), "{err}");
}

#[test]
fn check_config_masks_secrets_and_keeps_dotted_librdkafka_keys() {
    let dir = std::env::temp_dir().join(format!("oj-config-mask-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("c.toml");
    std::fs::write(
        &f,
        "[kafka.client]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.password\" = \"hunter2\"\n",
    )
    .unwrap();
    let s = Settings::load(
        Some(&f),
        env(&[("ONEJOURNEY__HTTP__BEARER_TOKEN", "tok-123")]),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(
        s.kafka.client.get("security.protocol").map(String::as_str),
        Some("SASL_SSL")
    );
    let text = s.to_masked_toml().unwrap();
    assert!(text.contains("SASL_SSL"), "{text}");
    assert!(!text.contains("hunter2") && !text.contains("tok-123"), "{text}");
    // What check-config prints loads back as a config file.
    let back = dir.join("back.toml");
    std::fs::write(&back, &text).unwrap();
    assert!(Settings::load(Some(&back), env(&[]), &Overrides::default()).is_ok());
}

#[test]
fn librdkafka_properties_come_from_the_environment_with_their_dots() {
    let dir = std::env::temp_dir().join(format!("oj-config-client-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("c.toml");
    std::fs::write(
        &f,
        "[kafka.client]\n\"security.protocol\" = \"SSL\"\n\"client.id\" = \"from-file\"\n",
    )
    .unwrap();
    let s = Settings::load(
        Some(&f),
        env(&[
            ("ONEJOURNEY_KAFKA_CLIENT_SSL_CA_LOCATION", "/run/ca.pem"),
            ("ONEJOURNEY_KAFKA_CLIENT_SECURITY_PROTOCOL", "SASL_SSL"),
            ("ONEJOURNEY_KAFKA_CLIENT_SASL_PASSWORD", "hunter2"),
        ]),
        &Overrides::default(),
    )
    .unwrap();
    let get = |k: &str| s.kafka.client.get(k).map(String::as_str);
    assert_eq!(get("ssl.ca.location"), Some("/run/ca.pem"));
    assert_eq!(
        get("security.protocol"),
        Some("SASL_SSL"),
        "the environment wins over the file"
    );
    assert_eq!(get("client.id"), Some("from-file"));
    assert!(!s.to_masked_toml().unwrap().contains("hunter2"));
}

#[test]
fn a_file_layer_is_read() {
    let dir = std::env::temp_dir().join(format!("oj-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("c.toml");
    std::fs::write(
        &f,
        "[kafka]\nbrokers = \"file:1\"\n[timers]\nallowed_lateness = \"5m\"\n",
    )
    .unwrap();
    let s = Settings::load(Some(&f), env(&[]), &Overrides::default()).unwrap();
    assert_eq!(s.kafka.brokers, "file:1");
    assert_eq!(s.timers.allowed_lateness, Duration::from_secs(300));
    assert_eq!(s.kafka.group_id, "onejourney", "defaults fill the rest");
}

#[test]
fn the_identity_key_comes_from_the_environment_or_a_file_and_is_masked() {
    let load = |pairs: &[(&str, &str)]| Settings::load(None, env(pairs), &Overrides::default());
    let none = load(&[]).unwrap();
    assert!(none.namespaces().unwrap().identity_key().is_development());
    let secret = "an identity key of some length";
    let s = load(&[("ONEJOURNEY__IDENTITY__KEY", secret)]).unwrap();
    let key = s.namespaces().unwrap().identity_key().clone();
    assert!(!key.is_development());
    assert!(!s.to_masked_toml().unwrap().contains(secret));
    let dir = std::env::temp_dir().join(format!("oj-config-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("identity.key");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let path = file.to_str().unwrap();
    let f = load(&[("ONEJOURNEY__IDENTITY__KEY_FILE", path)]).unwrap();
    assert_eq!(
        f.namespaces().unwrap().identity_key().id(),
        key.id(),
        "the file's key, newline trimmed"
    );
    let err = |pairs: &[(&str, &str)]| load(pairs).unwrap_err().to_string();
    assert!(err(&[("ONEJOURNEY__IDENTITY__KEY", "short")]).contains("identity.key"));
    assert!(err(&[
        ("ONEJOURNEY__IDENTITY__KEY", secret),
        ("ONEJOURNEY__IDENTITY__KEY_FILE", path)
    ])
    .contains("not both"));
    assert!(err(&[("ONEJOURNEY__IDENTITY__KEY_FILE", "/nonexistent/key")]).contains("identity.key_file"));
    std::fs::write(&file, "\n").unwrap();
    assert!(err(&[("ONEJOURNEY__IDENTITY__KEY_FILE", path)]).contains("empty"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_dedupe_window_shorter_than_the_allowed_lateness_is_refused_with_its_key() {
    let load = |pairs: &[(&str, &str)]| Settings::load(None, env(pairs), &Overrides::default());
    let err = load(&[
        ("ONEJOURNEY__STATE__DEDUPE_WINDOW", "10m"),
        ("ONEJOURNEY__TIMERS__ALLOWED_LATENESS", "1h"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("state.dedupe_window"), "{err}");
    let s = load(&[("ONEJOURNEY__STATE__DEDUPE_WINDOW", "0s")]).unwrap();
    assert!(s.state.dedupe_window.is_zero());
    assert_eq!(load(&[]).unwrap().state.dedupe_window, Duration::from_secs(30 * 86_400));
}

#[test]
fn routing_journeys_needs_an_address_the_other_processes_can_reach() {
    let load = |pairs: &[(&str, &str)]| Settings::load(None, env(pairs), &Overrides::default());
    let on = [
        ("ONEJOURNEY__SCALEOUT__IDENTITY_LOG", "true"),
        ("ONEJOURNEY__SCALEOUT__ROUTE_JOURNEYS", "true"),
    ];
    assert!(load(&on).is_ok(), "127.0.0.1 is reachable on one host");
    let every = [on[0], on[1], ("ONEJOURNEY__HTTP__ADDR", "0.0.0.0:9100")];
    let e = load(&every).unwrap_err();
    assert!(e.to_string().contains("http.advertised_addr"), "{e}");
    let advertised = [
        every[0],
        every[1],
        every[2],
        ("ONEJOURNEY__HTTP__ADVERTISED_ADDR", "10.0.0.7:9100"),
    ];
    assert!(load(&advertised).is_ok());
    // Without routing, nothing is forwarded: any address goes.
    assert!(load(&[("ONEJOURNEY__HTTP__ADDR", "0.0.0.0:9100")]).is_ok());
}
