//! Semantic validation: values that parse but cannot work.

use std::net::Ipv6Addr;

use crate::{BusKind, Config};

/// Room versions new rooms may default to. Older versions can still be
/// joined; creating them by default would only hurt interoperability.
const DEFAULT_ROOM_VERSIONS: [&str; 3] = ["10", "11", "12"];

impl Config {
    /// Every semantic problem, one line each; empty when the config is usable.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let global = &self.global;
        if let Err(e) = check_server_name(&global.server_name) {
            errors.push(format!("global.server_name: {e}"));
        }
        let url = global.database_url.as_str();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            errors.push(format!("global.database_url: {url:?} must start with sqlite: or postgres:"));
        }
        if global.bus == BusKind::Kafka && global.kafka_brokers.trim().is_empty() {
            errors.push("global.kafka_brokers: required when global.bus is kafka (host:port,…)".to_owned());
        }
        if global.kafka_replication == 0 || global.kafka_replication < -1 {
            errors.push("global.kafka_replication: must be -1 (the cluster's default) or at least 1".to_owned());
        }
        if global.bus_partitions == 0 {
            errors.push("global.bus_partitions: must be at least 1".to_owned());
        }
        if global.log_filter.trim().is_empty() {
            errors.push("global.log_filter: must not be empty (try `info`)".to_owned());
        }
        if let Some(secret) = &self.client_api.registration_shared_secret
            && secret.is_empty()
        {
            errors.push("client_api.registration_shared_secret: must not be empty (omit it to disable)".to_owned());
        }
        if self.client_api.max_upload_size == 0 {
            errors.push("client_api.max_upload_size: must be at least 1 byte".to_owned());
        }
        errors.extend(self.turn_errors());
        if let Some(url) = &self.client_api.public_base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            errors.push(format!("client_api.public_base_url: {url:?} must start with https:// or http://"));
        }
        let version = self.roomserver.default_room_version.as_str();
        if !DEFAULT_ROOM_VERSIONS.contains(&version) {
            errors.push(format!(
                "roomserver.default_room_version: {version:?} is not one of {}",
                DEFAULT_ROOM_VERSIONS.join(", ")
            ));
        }
        for name in &self.federation_api.trusted_key_servers {
            if let Err(e) = check_server_name(name) {
                errors.push(format!("federation_api.trusted_key_servers: {e}"));
            }
        }
        for key_id in self.federation_api.old_verify_keys.keys() {
            if !key_id.starts_with("ed25519:") {
                errors.push(format!("federation_api.old_verify_keys: {key_id:?} is not an `ed25519:` key id"));
            }
        }
        let (client, federation) = (self.client_api.listen, self.federation_api.listen);
        if client == federation && client.port() != 0 {
            errors.push(format!("client_api.listen and federation_api.listen are both {client}"));
        }
        errors
    }
}

impl Config {
    /// TURN URIs are `turn:` or `turns:` URIs (the spec's pattern), and they
    /// come with the secret their credentials are derived from.
    fn turn_errors(&self) -> Vec<String> {
        let client = &self.client_api;
        let mut errors: Vec<String> = client
            .turn_uris
            .iter()
            .filter(|uri| !(uri.starts_with("turn:") || uri.starts_with("turns:")))
            .map(|uri| format!("client_api.turn_uris: {uri:?} must start with turn: or turns:"))
            .collect();
        let has_secret = client.turn_shared_secret.as_deref().is_some_and(|secret| !secret.is_empty());
        if !client.turn_uris.is_empty() && !has_secret {
            errors.push("client_api.turn_shared_secret: required (and not empty) with client_api.turn_uris".to_owned());
        }
        if client.turn_user_lifetime_secs == 0 {
            errors.push("client_api.turn_user_lifetime_secs: must be at least 1".to_owned());
        }
        errors
    }
}

/// A server name per the spec's grammar: `hostname [":" port]`, where the
/// hostname is an IPv4 address, a bracketed IPv6 address or a DNS name of
/// letters, digits, `-` and `.` (1–255 characters).
/// <https://spec.matrix.org/v1.16/appendices/#server-name>
pub fn check_server_name(name: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(|| format!("{name:?}: unclosed IPv6 literal"))?;
        ip.parse::<Ipv6Addr>().map_err(|_| format!("{name:?}: {ip:?} is not an IPv6 address"))?;
        match after {
            "" => (None, None),
            _ => (None, Some(after.strip_prefix(':').ok_or_else(|| format!("{name:?}: junk after IPv6 literal"))?)),
        }
    } else {
        match name.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(name), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() || host.len() > 255 {
            return Err(format!("{name:?}: the host must be 1 to 255 characters"));
        }
        if let Some(bad) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.')) {
            return Err(format!("{name:?}: {bad:?} is not allowed in a host name"));
        }
    }
    if let Some(port) = port {
        let valid = (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err(format!("{name:?}: {port:?} is not a port number"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_server_names() {
        for name in [
            "localhost",
            "localhost:8448",
            "example.org",
            "matrix-1.example.org:443",
            "1.2.3.4:80",
            "[::1]",
            "[2001:db8::1]:8448",
        ] {
            assert_eq!(check_server_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn invalid_server_names() {
        for name in [
            "",
            ":8448",
            "exa mple.org",
            "example.org:",
            "example.org:0",
            "example.org:65536",
            "example.org:12a",
            "ex_ample.org",
            "[::1",
            "[nope]:80",
            "[::1]80",
            "a:b:c",
        ] {
            assert!(check_server_name(name).is_err(), "{name} should be refused");
        }
        assert!(check_server_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn the_defaults_pass() {
        assert_eq!(Config::default().check(), Vec::<String>::new());
    }

    #[test]
    fn every_semantic_error_is_listed() {
        let mut config = Config::default();
        config.global.server_name = "bad name".to_owned();
        config.global.database_url = "mysql://x".to_owned();
        config.global.bus = BusKind::Kafka;
        config.global.kafka_replication = 0;
        config.global.bus_partitions = 0;
        config.roomserver.default_room_version = "9".to_owned();
        config.client_api.registration_shared_secret = Some(String::new());
        config.federation_api.listen = config.client_api.listen;
        config.client_api.max_upload_size = 0;
        let errors = config.check();
        assert_eq!(errors.len(), 9, "{errors:#?}");
        for prefix in [
            "global.server_name",
            "global.database_url",
            "global.kafka_brokers",
            "global.kafka_replication",
            "global.bus_partitions",
            "roomserver.default_room_version",
            "client_api.registration_shared_secret",
            "client_api.max_upload_size",
            "client_api.listen and federation_api.listen",
        ] {
            assert!(errors.iter().any(|e| e.starts_with(prefix)), "no {prefix} in {errors:#?}");
        }
    }

    #[test]
    fn federation_lists_are_checked() {
        let mut config = Config::default();
        config.federation_api.trusted_key_servers = vec!["matrix.org".into(), "bad name".into()];
        config
            .federation_api
            .old_verify_keys
            .insert("rsa:1".into(), crate::OldVerifyKey { key: "abc".into(), expired_ts: 1 });
        let errors = config.check();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].starts_with("federation_api.trusted_key_servers"), "{errors:#?}");
        assert!(errors[1].starts_with("federation_api.old_verify_keys"), "{errors:#?}");
    }

    #[test]
    fn turn_and_discovery_settings_are_checked() {
        let mut config = Config::default();
        config.client_api.turn_uris = vec!["turn:turn.example.org:3478".into(), "stun:stun.example.org".into()];
        config.client_api.turn_user_lifetime_secs = 0;
        config.client_api.public_base_url = Some("matrix.example.org".into());
        let errors = config.check();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        for prefix in [
            "client_api.turn_uris: \"stun:",
            "client_api.turn_shared_secret",
            "client_api.turn_user_lifetime_secs",
            "client_api.public_base_url",
        ] {
            assert!(errors.iter().any(|e| e.starts_with(prefix)), "no {prefix} in {errors:#?}");
        }
        config.client_api.turn_uris.pop();
        config.client_api.turn_shared_secret = Some("s3cret".into());
        config.client_api.turn_user_lifetime_secs = 60;
        config.client_api.public_base_url = Some("https://matrix.example.org".into());
        assert_eq!(config.check(), Vec::<String>::new());
    }

    #[test]
    fn postgres_urls_are_accepted() {
        let mut config = Config::default();
        config.global.database_url = "postgres://u:p@localhost/myelin".to_owned();
        assert!(config.check().is_empty());
    }
}
