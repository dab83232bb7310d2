//! `convene-bench`: the waiting-room fan-out benchmark of docs/benchmarks.md. It starts a server
//! (convene, the minimal Node.js `ws` server in bench/node-ws, `rust-floor`, the cheapest fan-out
//! in Rust, or `store-floor`, the same with convene's durable admission and frames; both floors are
//! this binary's hidden `serve-floor` mode, see `floor.rs`), enters N guests into a
//! `wait_for_host` meeting, connects each one's WebSocket event stream, measures the server's
//! resident memory with all of them idle, then has the host join and measures, per guest, the
//! time from the host's API response to that guest receiving its `participant.admitted`.
//!
//! With `--nodes 3 --postgres-url ...` it measures the delay across nodes instead: three convene
//! nodes on one fresh PostgreSQL database, the guests' streams spread over them, the host joining
//! on the first; the figures are given per node (the host's own, and the others, which hear of
//! the commit through PostgreSQL's notifications).
//!
//! Guests enter from many loopback source addresses (127.1.x.y), as many real clients would,
//! which keeps each address under the per-address rate limit of unauthenticated calls.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use convene_bench::{
    ChildServer, PgDatabase, convene_command, convene_missing, cpu_time, percentile,
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod floor;

const KEY: &str = "APIbench";
const SECRET: &str = "bench-secret-0123456789-0123456789-abcdef";
/// Requests per source address (the server allows a burst of 40 per address).
const PER_ADDRESS: usize = 25;

#[derive(Parser, Debug)]
#[command(
    about = "Waiting-room fan-out: N WebSocket guests admitted at once by the host's join",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Client counts to run, e.g. 1000,10000.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    clients: Vec<usize>,
    /// Runs of each client count, every server in turn in each run; the ratios are the medians
    /// of the runs' (a run on this 2-core machine varies by a third).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// The convene binary (build with `cargo build --release -p convene`).
    #[arg(long, default_value = "target/release/convene")]
    convene_bin: PathBuf,
    /// The Node.js comparison server's directory (with node_modules from `npm ci`); empty to skip.
    #[arg(long, default_value = "bench/node-ws")]
    node_dir: String,
    /// Seconds to wait, all clients connected, before reading the server's memory.
    #[arg(long, default_value_t = 3)]
    idle_seconds: u64,
    /// Skip rust-floor and store-floor, the minimal Rust servers run after convene and node-ws.
    #[arg(long)]
    no_floor: bool,
    /// Run this many convene nodes on one PostgreSQL database (needs `--postgres-url`), the
    /// guests spread over them, and report the delay per node; only convene runs.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// A PostgreSQL URL whose user may create databases, for `--nodes`.
    #[arg(long)]
    postgres_url: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Serves rust-floor on 127.0.0.1:PORT (the benchmark starts it itself).
    #[command(hide = true)]
    ServeFloor {
        #[arg(long)]
        port: u16,
        /// Serve as store-floor, its database in this directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// What one run measured.
struct Figures {
    server: &'static str,
    clients: usize,
    notified: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// From the host's request being sent (not its response) to the admission.
    request_p99: Duration,
    request_max: Duration,
    /// How long the host's join call took.
    api: Duration,
    /// Before the guests entered (the meeting created).
    rss_base_kb: u64,
    rss_idle_kb: u64,
    /// CPU time the server used from the host's request until every guest was told: a
    /// steadier figure than latency for comparing builds on a noisy machine.
    server_cpu: Duration,
    /// With several nodes: per node (the host's first), the guests told and the p50 / p99 from
    /// the host's request.
    per_node: Vec<(usize, Duration, Duration)>,
}

impl Figures {
    /// Memory per guest entered and streaming, idle (the server may still hold memory it used
    /// for the entries, so this is an upper bound on what a waiting guest costs).
    fn per_client_kb(&self) -> f64 {
        (self.rss_idle_kb.saturating_sub(self.rss_base_kb)) as f64 / self.clients as f64
    }
}

/// Resident memory of a process, in KiB, from /proc/<pid>/status.
fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

struct Server {
    name: &'static str,
    /// The first runs the host; the guests are spread over all.
    processes: Vec<ChildServer>,
    database: Option<PgDatabase>,
}

async fn start_server(name: &'static str, args: &Args) -> anyhow::Result<Server> {
    if name == "convene-nodes" {
        let admin_url = args
            .postgres_url
            .as_deref()
            .context("--nodes needs --postgres-url")?;
        let database = PgDatabase::create(admin_url, "convene_nodes_bench").await?;
        let mut processes = Vec::with_capacity(args.nodes);
        for _ in 0..args.nodes {
            processes.push(
                ChildServer::start(&convene_missing(&args.convene_bin), |port, dir| {
                    let mut command = convene_command(&args.convene_bin, port, dir, KEY, SECRET);
                    command.env("CONVENE_DATABASE_URL", &database.url);
                    command
                })
                .await?,
            );
        }
        return Ok(Server {
            name,
            processes,
            database: Some(database),
        });
    }
    let process = match name {
        "convene" => {
            ChildServer::start(&convene_missing(&args.convene_bin), |port, dir| {
                convene_command(&args.convene_bin, port, dir, KEY, SECRET)
            })
            .await?
        }
        "rust-floor" | "store-floor" => {
            let exe = std::env::current_exe()?;
            let what = format!("{name} (this binary's serve-floor mode)");
            ChildServer::start(&what, |port, dir| {
                let mut command = Command::new(exe);
                command
                    .arg("serve-floor")
                    .arg("--port")
                    .arg(port.to_string());
                if name == "store-floor" {
                    command.arg("--data-dir").arg(dir);
                }
                command
            })
            .await?
        }
        "node-ws" => {
            ChildServer::start("node (run npm ci in bench/node-ws)", |port, _| {
                let mut command = Command::new("node");
                command
                    .arg(format!("{}/server.js", args.node_dir))
                    .env("PORT", port.to_string())
                    .env("API_KEY", KEY)
                    .env("API_SECRET", SECRET);
                command
            })
            .await?
        }
        other => bail!("unknown server {other}"),
    };
    Ok(Server {
        name,
        processes: vec![process],
        database: None,
    })
}

/// The loopback source address of client `i`.
fn source(i: usize) -> IpAddr {
    let group = i / PER_ADDRESS;
    IpAddr::V4(Ipv4Addr::new(
        127,
        1,
        (group / 250) as u8,
        (group % 250 + 1) as u8,
    ))
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    loop {
        let mut request = client.post(url).json(&body);
        request = match auth {
            Some(token) => request.bearer_auth(token),
            None => request.basic_auth(KEY, Some(SECRET)),
        };
        let response = request.send().await?;
        let status = response.status();
        if status.as_u16() == 429 {
            // The global limit of unauthenticated calls: back off and retry.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("{url}: {status} {body}");
        }
        return Ok(body);
    }
}

async fn enter(
    client: &reqwest::Client,
    base: &str,
    meeting: &str,
    credential: &str,
    identity: &str,
) -> anyhow::Result<String> {
    let url = format!("{base}/v1/meetings/{meeting}/enter");
    let body = json!({"credential": credential, "name": identity, "identity": identity});
    let mut request_body = body.clone();
    loop {
        let response = client.post(&url).json(&request_body).send().await?;
        let status = response.status();
        if status.as_u16() == 429 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            request_body = body.clone();
            continue;
        }
        let answer: Value = response.json().await?;
        if !status.is_success() {
            bail!("enter: {status} {answer}");
        }
        return Ok(answer["token"].as_str().context("token")?.to_owned());
    }
}

/// Where a guest streams from: its source address, and the node (index and address) it reaches.
struct Route {
    from: IpAddr,
    node: usize,
    addr: SocketAddr,
}

/// One guest: connects from its source address, reports when the first frame arrived, then the
/// instant its own admission arrived (with its node).
async fn guest(
    route: Route,
    url: String,
    identity: String,
    connected: tokio::sync::mpsc::Sender<()>,
    admitted: tokio::sync::mpsc::UnboundedSender<(usize, Instant)>,
    mut hold: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Route { from, node, addr } = route;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url.into_client_request()?, tcp, Some(config))
            .await?;
    let mut announced = false;
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let at = Instant::now();
        if !announced {
            announced = true;
            let _ = connected.send(()).await;
        }
        // Cheap pre-check before parsing: most frames are not admissions.
        if text.as_str().contains("participant.admitted") {
            let frame: Value = serde_json::from_str(text.as_str())?;
            if frame["type"] == "participant.admitted"
                && frame["data"]["identity"] == identity.as_str()
            {
                let _ = admitted.send((node, at));
                // Stay connected (as an admitted guest would) until the run ends, so closing
                // connections do not load the server while others are still being told.
                let _ = hold.wait_for(|done| *done).await;
                return Ok(());
            }
        }
    }
    Ok(())
}

async fn run(name: &'static str, n: usize, args: &Args) -> anyhow::Result<Figures> {
    let mut server = start_server(name, args).await?;
    let figures = measure(&server, n, args).await;
    if let Some(database) = server.database.take() {
        server.processes.clear();
        database.drop().await?;
    }
    figures
}

async fn measure(server: &Server, n: usize, args: &Args) -> anyhow::Result<Figures> {
    let name = server.name;
    let nodes = server.processes.len();
    let node_of = move |i: usize| i % nodes;
    let host_node = &server.processes[0];
    let pid = host_node.pid();
    let admin = reqwest::Client::new();
    let meeting = post(
        &admin,
        &format!("{}/v1/meetings", host_node.base),
        None,
        json!({"name": "bench", "policy": "wait_for_host"}),
    )
    .await?;
    let meeting_id = meeting["meeting_id"]
        .as_str()
        .context("meeting_id")?
        .to_owned();
    let guest_pin = meeting["credentials"]["participant"]
        .as_str()
        .context("participant credential")?
        .to_owned();
    let host_pin = meeting["credentials"]["host"]
        .as_str()
        .context("host credential")?
        .to_owned();

    // Enter every guest (64 at a time), each group from its own source address.
    let groups = n.div_ceil(PER_ADDRESS);
    let clients: Vec<reqwest::Client> = (0..groups)
        .map(|g| {
            reqwest::Client::builder()
                .local_address(source(g * PER_ADDRESS))
                .build()
        })
        .collect::<Result<_, _>>()?;
    // The baseline: the meeting created, no guest yet. (Taken after the entries instead, it was
    // above the idle figure for convene: the server gives back memory the 64 concurrent entries
    // used only after the streams open.)
    let rss_base_kb = rss_kb(pid)?;
    let limit = Arc::new(Semaphore::new(64));
    let started = Instant::now();
    let mut entering = Vec::with_capacity(n);
    for i in 0..n {
        let (client, base, meeting_id, pin, limit) = (
            clients[i / PER_ADDRESS].clone(),
            server.processes[node_of(i)].base.clone(),
            meeting_id.clone(),
            guest_pin.clone(),
            limit.clone(),
        );
        entering.push(tokio::spawn(async move {
            let _permit = limit.acquire().await?;
            enter(&client, &base, &meeting_id, &pin, &format!("g{i}")).await
        }));
    }
    let mut tokens = Vec::with_capacity(n);
    for task in entering {
        tokens.push(task.await??);
    }
    eprintln!(
        "[{name} n={n}] {n} guests entered in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // Their HTTP connections close (a guest's browser would not keep one open beside its
    // stream; 10,000 idle ones next to 10,000 streams would also pass the server's open-files
    // cap here).
    drop(clients);

    // Connect every guest's stream (to its node).
    let addrs: Vec<SocketAddr> = server
        .processes
        .iter()
        .map(|p| p.base.trim_start_matches("http://").parse())
        .collect::<Result<_, _>>()?;
    let (connected_tx, mut connected_rx) = tokio::sync::mpsc::channel(1024);
    let connecting = Arc::new(Semaphore::new(256));
    let (release, hold) = tokio::sync::watch::channel(false);
    let (admitted_tx, mut admitted_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut guests = Vec::with_capacity(n);
    for (i, token) in tokens.into_iter().enumerate() {
        let addr = addrs[node_of(i)];
        let url = format!("ws://{addr}/v1/meetings/{meeting_id}/events?access_token={token}");
        let (tx, permit, hold, admitted) = (
            connected_tx.clone(),
            connecting.clone().acquire_owned().await?,
            hold.clone(),
            admitted_tx.clone(),
        );
        guests.push(tokio::spawn(async move {
            let (inner_tx, mut inner_rx) = tokio::sync::mpsc::channel(1);
            let forward = tokio::spawn(async move {
                if inner_rx.recv().await.is_some() {
                    drop(permit);
                    let _ = tx.send(()).await;
                }
            });
            let route = Route {
                from: source(i),
                node: node_of(i),
                addr,
            };
            let result = guest(route, url, format!("g{i}"), inner_tx, admitted, hold).await;
            forward.abort();
            result
        }));
    }
    drop(connected_tx);
    drop(admitted_tx);
    let mut connected = 0;
    while connected < n {
        match tokio::time::timeout(Duration::from_secs(60), connected_rx.recv()).await {
            Ok(Some(())) => connected += 1,
            _ => bail!("only {connected} of {n} guests connected"),
        }
    }
    eprintln!(
        "[{name} n={n}] {n} streams connected in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let rss_idle_kb = rss_kb(pid)?;

    // The host enters and joins: the meeting starts and every waiting guest is admitted.
    // On its own thread and runtime, so the instant of the response is taken when it arrives,
    // not when this busy runtime (10,000 guest tasks) gets round to it.
    let base = host_node.base.clone();
    let (requested, responded, cpu_before) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Instant, Instant, Duration)> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let host = reqwest::Client::builder()
                    .local_address(IpAddr::V4(Ipv4Addr::new(127, 2, 0, 1)))
                    .build()?;
                let host_token = enter(&host, &base, &meeting_id, &host_pin, "host").await?;
                let cpu_before = cpu_time(pid)?;
                let requested = Instant::now();
                post(
                    &host,
                    &format!("{base}/v1/meetings/{meeting_id}/join"),
                    Some(&host_token),
                    json!({}),
                )
                .await?;
                Ok((requested, Instant::now(), cpu_before))
            })
        })
        .await??;

    let mut latencies = Vec::with_capacity(n);
    let mut from_request = Vec::with_capacity(n);
    let mut by_node: Vec<Vec<Duration>> = vec![Vec::new(); nodes];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while latencies.len() < n {
        match tokio::time::timeout_at(deadline, admitted_rx.recv()).await {
            Ok(Some((node, at))) => {
                latencies.push(at.saturating_duration_since(responded));
                from_request.push(at.saturating_duration_since(requested));
                by_node[node].push(at.saturating_duration_since(requested));
            }
            _ => break,
        }
    }
    let server_cpu = cpu_time(pid)?.saturating_sub(cpu_before);
    let _ = release.send(true);
    for task in guests {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) | Err(_) => {}
            Ok(Ok(Err(e))) => eprintln!("a guest failed: {e}"),
            Ok(Err(e)) => eprintln!("a guest task failed: {e}"),
        }
    }
    latencies.sort();
    from_request.sort();
    let per_node = by_node
        .into_iter()
        .map(|mut told| {
            told.sort();
            (told.len(), percentile(&told, 50.0), percentile(&told, 99.0))
        })
        .collect();
    Ok(Figures {
        per_node,
        request_p99: percentile(&from_request, 99.0),
        request_max: from_request.last().copied().unwrap_or_default(),
        api: responded.saturating_duration_since(requested),
        server: server.name,
        clients: n,
        notified: latencies.len(),
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
        rss_base_kb,
        rss_idle_kb,
        server_cpu,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Mode::ServeFloor { port, data_dir }) = args.mode {
        return floor::serve(port, data_dir.as_deref());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let mut servers = vec!["convene"];
    if args.nodes > 1 {
        servers = vec!["convene-nodes"];
    } else {
        if !args.node_dir.is_empty() {
            servers.push("node-ws");
        }
        if !args.no_floor {
            servers.push("rust-floor");
            servers.push("store-floor");
        }
    }
    let mut all = Vec::new();
    for &n in &args.clients {
        for _ in 0..args.runs {
            for &server in &servers {
                let figures = run(server, n, &args)
                    .await
                    .with_context(|| format!("{server} with {n} clients"))?;
                all.push(figures);
            }
        }
    }
    println!();
    println!(
        "Latency: from the host's join response (p50/p99/max), and from its request (p99/max); server CPU: all its threads, from the request until every guest was told."
    );
    println!(
        "| server | clients | notified | missed | p50 | p99 | max | join call | p99 from request | max from request | RSS idle (before entries) | per guest | server CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in &all {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} MiB ({:.1} MiB) | {:.1} KiB | {} |",
            f.server,
            f.clients,
            f.notified,
            f.clients - f.notified,
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            ms(f.api),
            ms(f.request_p99),
            ms(f.request_max),
            f.rss_idle_kb as f64 / 1024.0,
            f.rss_base_kb as f64 / 1024.0,
            f.per_client_kb(),
            ms(f.server_cpu),
        );
    }
    print_per_node(&all);
    print_ratios(&all, &args.clients);
    Ok(())
}

/// The p99 from the host's request, as ratios between the servers, per client count: each run's
/// and their median. (Node answers the host after its send loop, so its p99 from the response is
/// ~0 and a ratio of that figure means nothing: the request is the common starting line.)
fn print_ratios(all: &[Figures], counts: &[usize]) {
    let mut seen = Vec::new();
    for &n in counts {
        if seen.contains(&n) {
            continue;
        }
        seen.push(n);
        let of = |server: &str| -> Vec<&Figures> {
            all.iter()
                .filter(|f| f.server == server && f.clients == n)
                .collect()
        };
        let (convene, node, floor) = (of("convene"), of("node-ws"), of("rust-floor"));
        let store = of("store-floor");
        // convene / rust-floor's target, which store-floor (convene's job and nothing else) is
        // read against too.
        let target = 1.3;
        let pairs = [
            (
                "convene / rust-floor",
                &convene,
                &floor,
                Bar::Target(target),
            ),
            (
                "convene / node-ws",
                &convene,
                &node,
                if n >= 10_000 {
                    Bar::Target(0.8)
                } else {
                    Bar::None
                },
            ),
            ("rust-floor / node-ws", &floor, &node, Bar::None),
            (
                "store-floor / rust-floor",
                &store,
                &floor,
                Bar::FloorOf(target),
            ),
            ("convene / store-floor", &convene, &store, Bar::None),
        ];
        for (label, a, b, bar) in pairs {
            if a.is_empty() || b.is_empty() {
                continue;
            }
            let ratios: Vec<f64> = a
                .iter()
                .zip(b.iter())
                .map(|(a, b)| a.request_p99.as_secs_f64() / b.request_p99.as_secs_f64().max(1e-6))
                .collect();
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            let median = median(&ratios);
            let verdict = match bar {
                Bar::Target(t) => {
                    let met = if median <= t { "met" } else { "not met" };
                    format!("; target <= {t}: {met}")
                }
                Bar::FloorOf(t) if median > t => format!(
                    "; past {t}: convene / rust-floor's target is out of reach of convene's job here"
                ),
                Bar::FloorOf(_) | Bar::None => String::new(),
            };
            println!(
                "n={n}: p99 from the request {label} = {median:.2} (median of {}: {}){verdict}",
                ratios.len(),
                each.join(", "),
            );
        }
        if let (Some(c), Some(w)) = (convene.first(), node.first()) {
            println!(
                "n={n}: memory per guest entered and streaming, convene {:.1} KiB, node-ws {:.1} KiB",
                c.per_client_kb(),
                w.per_client_kb()
            );
        }
    }
}

/// What a printed ratio is held to.
enum Bar {
    None,
    /// A target: met at or under it.
    Target(f64),
    /// The floor of a server's job against that target: past it, no server doing the job meets it.
    FloorOf(f64),
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// With several nodes: the delay per node, and how much more the other nodes' p99 is than the
/// host's node's.
fn print_per_node(all: &[Figures]) {
    let several: Vec<&Figures> = all.iter().filter(|f| f.per_node.len() > 1).collect();
    if several.is_empty() {
        return;
    }
    println!();
    println!(
        "Across nodes: from the host's join request (on node 1) to each guest's admission, by the node the guest streams from (RSS and server CPU above are node 1's)."
    );
    println!("| clients | node | guests told | p50 | p99 |");
    println!("|---:|---|---:|---:|---:|");
    for f in &several {
        for (i, (told, p50, p99)) in f.per_node.iter().enumerate() {
            let which = if i == 0 { " (host's)" } else { "" };
            println!(
                "| {} | {}{which} | {told} | {} | {} |",
                f.clients,
                i + 1,
                ms(*p50),
                ms(*p99)
            );
        }
        let host = f.per_node[0].2;
        let others = f.per_node[1..]
            .iter()
            .map(|n| n.2)
            .max()
            .unwrap_or_default();
        println!(
            "n={}: the other nodes' p99 is {} more than the host's node's ({} vs {}; target <= 50 ms more)",
            f.clients,
            ms(others.saturating_sub(host)),
            ms(others),
            ms(host)
        );
    }
}
