//! Files a server needs before it can start: the configuration, the signing
//! key and a self-signed TLS certificate for the federation listener.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use myelin_config::{Config, check_server_name};
use myelin_types::signing::ServerSigningKey;

use crate::cli::GenerateArgs;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("invalid --server-name: {0}")]
    ServerName(String),
    #[error("refusing to overwrite {}", .0.display())]
    Exists(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("generating the TLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("serializing the configuration: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("the generated configuration is invalid:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error("{} exists but {} does not; restore it or remove both", present.display(), missing.display())]
    HalfTls { present: PathBuf, missing: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GenerateError + '_ {
    move |source| GenerateError::Io { path: path.to_owned(), source }
}

/// `myelin generate-config`. Writes nothing unless it can write everything:
/// an existing file aborts before the first write. Returns the files written.
pub fn generate_config(args: &GenerateArgs) -> Result<Vec<PathBuf>, GenerateError> {
    check_server_name(&args.server_name).map_err(GenerateError::ServerName)?;
    std::fs::create_dir_all(&args.dir).map_err(io(&args.dir))?;
    // Absolute paths, so the config works from any working directory.
    let dir = std::fs::canonicalize(&args.dir).map_err(io(&args.dir))?;

    let mut config = Config::in_dir(dir.clone());
    config.global.server_name = args.server_name.clone();
    if let Some(url) = &args.database_url {
        config.global.database_url = url.clone();
    }
    config.client_api.registration_shared_secret = Some(myelin_types::random::alphanumeric(48));
    config.client_api.open_registration = false;
    let errors = config.check();
    if !errors.is_empty() {
        return Err(GenerateError::Invalid(errors));
    }

    let config_path = dir.join("myelin.yaml");
    let (key_path, cert_path, tls_key_path) = (
        config.global.signing_key_path.clone(),
        config.federation_api.tls_certificate_path.clone(),
        config.federation_api.tls_private_key_path.clone(),
    );
    for path in [&config_path, &key_path, &cert_path, &tls_key_path] {
        if path.exists() {
            return Err(GenerateError::Exists(path.clone()));
        }
    }

    let yaml = format!(
        "# Myelin configuration for {name}, written by `myelin generate-config`.\n\
         # Any key can be overridden from the environment as MYELIN_<SECTION>__<KEY>,\n\
         # e.g. MYELIN_CLIENT_API__LISTEN=0.0.0.0:8008. Check with `myelin check-config`.\n\
         {body}",
        name = args.server_name,
        body = serde_yaml_ng::to_string(&config)?
    );
    let (cert_pem, tls_key_pem) = self_signed_certificate(&args.server_name)?;
    // The config holds the registration secret: private, like the keys.
    write_new(&config_path, &yaml, 0o600)?;
    write_new(&key_path, &ServerSigningKey::generate_file_contents(), 0o600)?;
    write_new(&cert_path, &cert_pem, 0o644)?;
    write_new(&tls_key_path, &tls_key_pem, 0o600)?;
    Ok(vec![config_path, key_path, cert_path, tls_key_path])
}

/// For `myelin run` without a configuration: create the data directory, a
/// signing key and a self-signed certificate when they are missing, and keep
/// them when present (a new signing key would make other servers distrust
/// our old events' signatures).
pub fn prepare_default_files(config: &Config) -> Result<Vec<PathBuf>, GenerateError> {
    let mut written = Vec::new();
    let data_dir = &config.global.data_dir;
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let key_path = &config.global.signing_key_path;
    if !key_path.exists() {
        write_new(key_path, &ServerSigningKey::generate_file_contents(), 0o600)?;
        written.push(key_path.clone());
    }
    let (cert, key) = (&config.federation_api.tls_certificate_path, &config.federation_api.tls_private_key_path);
    match (cert.exists(), key.exists()) {
        (true, true) => {}
        (false, false) => {
            let (cert_pem, key_pem) = self_signed_certificate(&config.global.server_name)?;
            write_new(cert, &cert_pem, 0o644)?;
            write_new(key, &key_pem, 0o600)?;
            written.extend([cert.clone(), key.clone()]);
        }
        (true, false) => return Err(GenerateError::HalfTls { present: cert.clone(), missing: key.clone() }),
        (false, true) => return Err(GenerateError::HalfTls { present: key.clone(), missing: cert.clone() }),
    }
    Ok(written)
}

/// A self-signed certificate (PEM) and its private key (PEM) for the host
/// part of `server_name`.
fn self_signed_certificate(server_name: &str) -> Result<(String, String), GenerateError> {
    let certified = rcgen::generate_simple_self_signed(vec![host_of(server_name).to_owned()])?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

/// `example.org:8448` → `example.org`; `[::1]:8448` → `::1`.
fn host_of(server_name: &str) -> &str {
    if let Some(rest) = server_name.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    server_name.rsplit_once(':').map_or(server_name, |(host, _)| host)
}

/// Create `path` (never replacing an existing file) with `mode`.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), GenerateError> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            GenerateError::Exists(path.to_owned())
        } else {
            GenerateError::Io { path: path.to_owned(), source: e }
        }
    })?;
    file.write_all(contents.as_bytes()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn args(dir: &Path, server_name: &str) -> GenerateArgs {
        GenerateArgs { server_name: server_name.to_owned(), database_url: None, dir: dir.to_owned() }
    }

    #[test]
    fn generated_files_load_and_pass_the_checks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new");
        let written = generate_config(&args(&dir, "localhost:8448")).unwrap();
        assert_eq!(written.len(), 4);

        let config = Config::from_sources(
            Some(&std::fs::read_to_string(dir.join("myelin.yaml")).unwrap()),
            std::iter::empty::<(String, String)>(),
        )
        .expect("generated config loads");
        assert!(config.check().is_empty());
        assert_eq!(config.global.server_name, "localhost:8448");
        let dir = std::fs::canonicalize(&dir).unwrap();
        assert_eq!(config.global.data_dir, dir);
        assert_eq!(config.global.database_url, format!("sqlite://{}", dir.join("myelin.db").display()));
        assert!(!config.client_api.open_registration);
        let secret = config.client_api.registration_shared_secret.unwrap();
        assert!(secret.len() >= 32, "a strong secret: {secret}");

        let key = ServerSigningKey::load(&config.global.signing_key_path).expect("signing key loads");
        assert!(key.key_id().starts_with("ed25519:"));
        let cert = std::fs::read_to_string(&config.federation_api.tls_certificate_path).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        let mode = std::fs::metadata(&config.global.signing_key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "signing key is private");
        let mode = std::fs::metadata(dir.join("myelin.yaml")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "config holds a secret");
    }

    #[test]
    fn secrets_differ_between_runs() {
        let tmp = tempfile::tempdir().unwrap();
        generate_config(&args(&tmp.path().join("a"), "a.example")).unwrap();
        generate_config(&args(&tmp.path().join("b"), "b.example")).unwrap();
        let read = |d: &str| std::fs::read_to_string(tmp.path().join(d).join("myelin.yaml")).unwrap();
        let secret =
            |yaml: String| Config::from_sources(Some(&yaml), Vec::new()).unwrap().client_api.registration_shared_secret;
        assert_ne!(secret(read("a")), secret(read("b")));
    }

    #[test]
    fn existing_files_are_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("tls.crt"), "mine").unwrap();
        let error = generate_config(&args(tmp.path(), "example.org")).unwrap_err();
        assert!(matches!(error, GenerateError::Exists(ref p) if p.ends_with("tls.crt")), "{error}");
        assert!(!tmp.path().join("myelin.yaml").exists(), "nothing written before the check");
        assert_eq!(std::fs::read_to_string(tmp.path().join("tls.crt")).unwrap(), "mine");

        let fresh = tmp.path().join("fresh");
        generate_config(&args(&fresh, "example.org")).unwrap();
        assert!(matches!(generate_config(&args(&fresh, "example.org")), Err(GenerateError::Exists(_))));
    }

    #[test]
    fn bad_inputs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(generate_config(&args(tmp.path(), "bad name")), Err(GenerateError::ServerName(_))));
        let mut bad_db = args(tmp.path(), "example.org");
        bad_db.database_url = Some("mysql://nope".to_owned());
        assert!(matches!(generate_config(&bad_db), Err(GenerateError::Invalid(_))));
        assert!(!tmp.path().join("myelin.yaml").exists());
    }

    #[test]
    fn default_files_are_created_once_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config::in_dir(tmp.path().join("myelin-data"));
        assert_eq!(prepare_default_files(&config).unwrap().len(), 3);
        let key = std::fs::read_to_string(&config.global.signing_key_path).unwrap();
        assert!(prepare_default_files(&config).unwrap().is_empty(), "second start generates nothing");
        assert_eq!(std::fs::read_to_string(&config.global.signing_key_path).unwrap(), key, "key kept");

        std::fs::remove_file(&config.federation_api.tls_private_key_path).unwrap();
        assert!(matches!(prepare_default_files(&config), Err(GenerateError::HalfTls { .. })));
    }

    #[test]
    fn host_of_strips_ports_and_brackets() {
        assert_eq!(host_of("example.org"), "example.org");
        assert_eq!(host_of("localhost:8448"), "localhost");
        assert_eq!(host_of("[::1]:8448"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
    }
}
