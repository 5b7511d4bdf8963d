//! The command line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};
use myelin_config::Config;

#[derive(Debug, Parser)]
#[command(name = "myelin", version, about = "A Matrix homeserver")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the homeserver (all components unless --components says otherwise).
    Run(RunArgs),
    /// Write a configuration, signing key and self-signed TLS certificate into a directory.
    GenerateConfig(GenerateArgs),
    /// Validate a configuration (with MYELIN_* overrides applied) and list every problem.
    CheckConfig(CheckArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// YAML configuration. Without it, the embedded default under ./myelin-data.
    /// MYELIN_<SECTION>__<KEY> environment variables override either.
    #[arg(long, value_name = "FILE", env = "MYELIN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Comma-separated components to run in this process.
    #[arg(long, value_name = "LIST", default_value_t = Components::ALL)]
    pub components: Components,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The server name in user ids, optionally with a port (`example.org`, `localhost:8448`).
    #[arg(long, value_name = "NAME")]
    pub server_name: String,
    /// `postgres://…` or `sqlite://…`; SQLite under DIR by default.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Directory for myelin.yaml, signing.key, tls.crt, tls.key and data; created if missing.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Which components this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Components {
    pub roomserver: bool,
    pub clientapi: bool,
    pub syncapi: bool,
    pub federationapi: bool,
    pub pusher: bool,
    pub appservice: bool,
}

impl Components {
    pub const NAMES: [&str; 6] = ["roomserver", "clientapi", "syncapi", "federationapi", "pusher", "appservice"];
    pub const ALL: Self =
        Self { roomserver: true, clientapi: true, syncapi: true, federationapi: true, pusher: true, appservice: true };
    const NONE: Self = Self {
        roomserver: false,
        clientapi: false,
        syncapi: false,
        federationapi: false,
        pusher: false,
        appservice: false,
    };

    fn flags(&self) -> [bool; 6] {
        [self.roomserver, self.clientapi, self.syncapi, self.federationapi, self.pusher, self.appservice]
    }
}

impl FromStr for Components {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        let mut components = Self::NONE;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let flag = match name {
                "roomserver" => &mut components.roomserver,
                "clientapi" => &mut components.clientapi,
                "syncapi" => &mut components.syncapi,
                "federationapi" => &mut components.federationapi,
                "pusher" => &mut components.pusher,
                "appservice" => &mut components.appservice,
                other => return Err(format!("unknown component `{other}` (expected {})", Self::NAMES.join(","))),
            };
            *flag = true;
        }
        if components == Self::NONE {
            return Err(format!("no components given (expected some of {})", Self::NAMES.join(",")));
        }
        Ok(components)
    }
}

impl fmt::Display for Components {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Self::NAMES.iter().zip(self.flags()).filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        f.write_str(&names.join(","))
    }
}

/// `myelin check-config`: every load and semantic error, or nothing.
pub fn check_config(path: &Path) -> Result<(), Vec<String>> {
    Config::load(Some(path)).map(drop).map_err(|errors| errors.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_parse_and_print() {
        assert_eq!("roomserver,syncapi".parse::<Components>().unwrap().to_string(), "roomserver,syncapi");
        assert_eq!(Components::ALL.to_string().parse::<Components>().unwrap(), Components::ALL);
        assert!(" clientapi , pusher ".parse::<Components>().unwrap().pusher);
        assert!("appservice".parse::<Components>().unwrap().appservice);
    }

    #[test]
    fn unknown_or_empty_component_lists_are_refused() {
        assert!("roomserver,mediaapi".parse::<Components>().unwrap_err().contains("unknown component `mediaapi`"));
        assert!("".parse::<Components>().is_err());
        assert!(",".parse::<Components>().is_err());
    }

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::try_parse_from(["myelin", "run", "--components", "roomserver,clientapi"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert!(args.components.roomserver && args.components.clientapi && !args.components.syncapi);
        let cli = Cli::try_parse_from(["myelin", "run"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.components, Components::ALL);
        assert!(Cli::try_parse_from(["myelin", "run", "--components", "nope"]).is_err());
        assert!(Cli::try_parse_from(["myelin", "generate-config", "--dir", "x"]).is_err(), "server name required");
        assert!(Cli::try_parse_from(["myelin", "check-config"]).is_err(), "config required");
    }

    #[test]
    fn check_config_lists_every_error_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        let yaml = "global:\n  server_name: 'not valid'\n  bus: kafka\n  bus_partitions: 0\nclient_api:\n  listen: nowhere\n  typo: 1\n";
        std::fs::write(&path, yaml).unwrap();
        let errors = check_config(&path).unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:#?}");
        let missing = check_config(&dir.path().join("absent.yaml")).unwrap_err();
        assert!(missing[0].contains("cannot read"), "{missing:?}");
    }
}
