//! One homeserver made of separate `myelin` processes over Kafka and
//! PostgreSQL, as `deploy/docker-compose.distributed.yml` runs it, with a
//! path-routing front door standing in for the reverse proxy.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use myelin_testkit::KafkaBroker;

use super::SHARED_SECRET;

/// One `myelin run --components …` process.
pub struct Process {
    pub name: String,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(6_000);
        format!("--- {} ---\n{}", self.name, &log[log.floor_char_boundary(start)..])
    }

    /// SIGKILL: the process gets no chance to hand anything over.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// The value of a bus counter for `topic` in this process's `/metrics`.
    pub async fn handled(&self, topic: &str) -> u64 {
        let metrics = reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap();
        let series = format!("myelin_bus_records_handled_total{{topic=\"{topic}\"}} ");
        metrics.lines().find_map(|line| line.strip_prefix(&series)).map_or(0, |v| v.trim().parse().unwrap())
    }
}

pub struct Distributed {
    dir: TempDir,
    config: PathBuf,
    brokers: String,
    federation_port: u16,
    pub processes: Vec<Process>,
    front_door: u16,
    _db: myelin_testkit::TestDb,
}

impl Distributed {
    /// Generates one configuration on a fresh PostgreSQL database and starts
    /// a process per entry of `components` (each a `--components` value),
    /// one after the other, each ready before the next.
    pub async fn start(broker: &KafkaBroker, components: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = myelin_testkit::TestDb::postgres().await;
        let federation_port = free_port();
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_myelin"))
            .args(["generate-config", "--server-name", &format!("localhost:{federation_port}")])
            .args(["--database-url", &db.url, "--dir"])
            .arg(dir.path())
            .status()
            .expect("run generate-config");
        assert!(status.success(), "generate-config failed");
        let config = dir.path().join("myelin.yaml");
        let mut homeserver = Self {
            dir,
            config,
            brokers: broker.brokers.clone(),
            federation_port,
            processes: Vec::new(),
            front_door: 0,
            _db: db,
        };
        for (n, components) in components.iter().enumerate() {
            let process = homeserver.spawn(&format!("{n}-{components}"), components).await;
            homeserver.processes.push(process);
        }
        homeserver.front_door = serve_front_door(homeserver.client_facing()).await;
        homeserver
    }

    async fn spawn(&self, name: &str, components: &str) -> Process {
        let port = free_port();
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_myelin"))
            .args(["run", "--components", components, "--config"])
            .arg(&self.config)
            .current_dir(self.dir.path())
            .env("MYELIN_GLOBAL__BUS", "kafka")
            .env("MYELIN_GLOBAL__KAFKA_BROKERS", &self.brokers)
            .env("MYELIN_GLOBAL__BUS_PARTITIONS", "4")
            .env("MYELIN_CLIENT_API__LISTEN", format!("127.0.0.1:{port}"))
            .env("MYELIN_FEDERATION_API__LISTEN", format!("127.0.0.1:{}", self.federation_port))
            .env("MYELIN_CLIENT_API__REGISTRATION_SHARED_SECRET", SHARED_SECRET)
            // The test polls /metrics; its request logs would bury the rest.
            .env("MYELIN_GLOBAL__LOG_FILTER", "info,myelin_observe=warn,ruma_state_res=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start myelin");
        let mut process = Process { name: name.to_owned(), port, child: Some(child), log };
        wait_healthy(&mut process).await;
        process
    }

    /// Ports of the processes serving client endpoints, in the order the
    /// front door tries them.
    fn client_facing(&self) -> Vec<u16> {
        let order = ["clientapi", "syncapi", "pusher"];
        order
            .iter()
            .flat_map(|component| self.processes.iter().filter(move |p| p.name.ends_with(component)))
            .map(|p| p.port)
            .collect()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.front_door)
    }

    pub fn logs(&self) -> String {
        self.processes.iter().map(Process::log_tail).collect::<Vec<_>>().join("\n")
    }
}

async fn wait_healthy(process: &mut Process) {
    let url = process.url("/health");
    for _ in 0..600 {
        if let Ok(response) = reqwest::get(&url).await
            && response.status().is_success()
        {
            return;
        }
        if let Some(status) = process.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            panic!("{} exited with {status}:\n{}", process.name, process.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} was not healthy within 60 s:\n{}", process.name, process.log_tail());
}

/// The reverse proxy of a distributed deployment, in its simplest form: a
/// request goes to the first upstream that does not answer 404
/// `M_UNRECOGNIZED`, so no path table has to be kept in step with the routers.
async fn serve_front_door(upstreams: Vec<u16>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(forward).with_state(upstreams);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

async fn forward(State(upstreams): State<Vec<u16>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let client = reqwest::Client::new();
    let mut last = None;
    for port in upstreams {
        let mut outbound = client.request(parts.method.clone(), format!("http://127.0.0.1:{port}{path}"));
        for (name, value) in parts.headers.iter().filter(|(name, _)| !is_hop_by_hop(name.as_str())) {
            outbound = outbound.header(name, value);
        }
        let response = outbound.body(body.clone()).send().await.unwrap();
        let status = response.status();
        let headers: HeaderMap = response
            .headers()
            .iter()
            .filter(|(name, _)| !is_hop_by_hop(name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let bytes = response.bytes().await.unwrap();
        let unrecognized = status == StatusCode::NOT_FOUND
            && serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v["errcode"] == "M_UNRECOGNIZED");
        let mut reply = Response::new(Body::from(bytes));
        *reply.status_mut() = status;
        *reply.headers_mut() = headers;
        if !unrecognized {
            return reply;
        }
        last = Some(reply);
    }
    last.expect("at least one upstream")
}

/// Headers that describe one connection or body framing, not the message.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(name, "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
