//! `convene-join-bench`: seed 002's join storm (docs/benchmarks.md, "Join storms"). Admin joins
//! (`POST /compat/livekit-join/`, the API key as Basic credentials, a fresh `uid` every request)
//! sent back to back over keep-alive connections to convene, to seed 002's own function on
//! Node.js (`bench/node-join`) and to a bare axum POST route (the ceiling), each started fresh
//! for each scenario:
//!
//! - `storm-1-room`, `storm-200-rooms`: `--connections` connections, every join into one room or
//!   spread over `room-0` .. `room-199`; a warm-up, then a measured window; joins/s and latency.
//! - `burst-10000`: 10,000 joins into one fresh room fired by `--burst-connections` connections
//!   as fast as answered (after a warm-up in another room); the time from the first send to the
//!   last answer, and latency.
//!
//! It prints a table per scenario and the targets, each MET or NOT MET.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};
use convene_bench::{cpu_time, percentile};

mod ceiling;
mod floor;
mod load;
mod servers;

use load::{Measured, Rooms, Target};
use servers::{Kind, Running, Settings};

/// Seed 002's join path; node-join and axum-ceiling take it too.
const PATH: &str = "/compat/livekit-join/";
/// Rooms of `storm-200-rooms`.
const ROOMS: u64 = 200;
/// The targets.
const TARGET_RATIO: f64 = 1.0;
const TARGET_P99: Duration = Duration::from_millis(25);
const TARGET_BURST: Duration = Duration::from_secs(3);

#[derive(Parser, Debug)]
#[command(
    about = "Seed 002 join storms: convene, the seed's Node.js function and a bare axum POST",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Scenarios to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "storm-1-room,storm-200-rooms,burst-10000"
    )]
    scenarios: Vec<Scenario>,
    /// Servers to run each scenario against (convene-pg is added when --postgres-url is given).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "convene,node-join,durable-floor,log-floor,axum-ceiling"
    )]
    servers: Vec<Kind>,
    /// Connections of a storm, each sending joins back to back.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Connections firing the burst.
    #[arg(long, default_value_t = 256)]
    burst_connections: usize,
    /// Joins in the burst.
    #[arg(long, default_value_t = 10_000)]
    burst_joins: u64,
    /// Seconds measured in a storm.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of warm-up before a storm's window and before the burst (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup_seconds: f64,
    /// The convene binary (build with `cargo build --release -p convene`).
    #[arg(long, default_value = "target/release/convene")]
    convene_bin: PathBuf,
    /// The Node.js peer's directory (with node_modules from `npm ci`).
    #[arg(long, default_value = "bench/node-join")]
    node_dir: PathBuf,
    /// Also run convene on PostgreSQL: a URL whose user may create databases (each run gets a
    /// fresh database next to this one, dropped after), e.g.
    /// postgres://postgres@127.0.0.1:5432/test.
    #[arg(long)]
    postgres_url: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Serves axum-ceiling on 127.0.0.1:PORT (the benchmark starts it itself).
    #[command(hide = true)]
    ServeCeiling {
        #[arg(long)]
        port: u16,
    },
    /// Serves durable-floor (or log-floor) on 127.0.0.1:PORT, its database in DATA_DIR.
    #[command(hide = true)]
    ServeFloor {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// What it writes per join: one row, or convene's rows (log-floor).
        #[arg(long, value_enum, default_value = "join")]
        rows: floor::Rows,
        /// log-floor on this PostgreSQL database instead of SQLite in DATA_DIR.
        #[arg(long)]
        database_url: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    #[value(name = "storm-1-room")]
    StormOneRoom,
    #[value(name = "storm-200-rooms")]
    StormRooms,
    #[value(name = "burst-10000")]
    Burst,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::StormOneRoom => "storm-1-room",
            Scenario::StormRooms => "storm-200-rooms",
            Scenario::Burst => "burst-10000",
        }
    }
}

/// One server's figures in one scenario.
struct Row {
    server: Kind,
    measured: Measured,
    /// The server's CPU time over the window (a storm) or the burst, all its threads.
    server_cpu: Duration,
    /// This load generator's CPU time over the same span.
    bench_cpu: Duration,
}

impl Row {
    fn p(&self, p: f64) -> Duration {
        percentile(&self.measured.latencies, p)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.mode {
        Some(Mode::ServeCeiling { port }) => return ceiling::serve(port),
        Some(Mode::ServeFloor {
            port,
            data_dir,
            rows,
            database_url,
        }) => return floor::serve(port, data_dir, rows, database_url),
        None => {}
    }
    // One thread: the load generator must leave the other core to the server.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let mut kinds = args.servers.clone();
    // With PostgreSQL, each SQLite server gets its PostgreSQL twin next to it.
    for (sqlite, postgres) in [
        (Kind::Convene, Kind::ConvenePg),
        (Kind::LogFloor, Kind::LogFloorPg),
    ] {
        if args.postgres_url.is_some() && !kinds.contains(&postgres) {
            if let Some(i) = kinds.iter().position(|&k| k == sqlite) {
                kinds.insert(i + 1, postgres);
            } else if postgres == Kind::ConvenePg {
                kinds.insert(0, postgres);
            }
        }
    }
    if kinds.iter().any(|k| k.on_postgres()) && args.postgres_url.is_none() {
        bail!("convene-pg and log-floor-pg need --postgres-url");
    }
    let settings = Settings {
        convene_bin: args.convene_bin.clone(),
        node_dir: args.node_dir.clone(),
        postgres_url: args.postgres_url.clone(),
    };
    let mut results = Vec::new();
    for &scenario in &args.scenarios {
        let mut rows = Vec::new();
        for &kind in &kinds {
            let server = Running::start(kind, &settings).await?;
            let row = run(scenario, kind, &server, &args).await;
            server.stop().await?;
            let row = row?;
            eprintln!(
                "[{} {}] {} joins, {:.0}/s, p50 {}, p99 {}, {} errors; joins per connection {}-{}",
                scenario.name(),
                kind.name(),
                row.measured.joins,
                row.measured.per_second(),
                ms(row.p(50.0)),
                ms(row.p(99.0)),
                row.measured.errors.total(),
                row.measured.per_connection.0,
                row.measured.per_connection.1,
            );
            rows.push(row);
        }
        results.push((scenario, rows));
    }
    report(&args, &results);
    Ok(())
}

async fn run(scenario: Scenario, kind: Kind, server: &Running, args: &Args) -> anyhow::Result<Row> {
    let target = Target::new(&server.process.base, PATH, servers::KEY, servers::SECRET)?;
    let pid = server.process.pid();
    let warmup = Duration::from_secs_f64(args.warmup_seconds);
    let window = Duration::from_secs_f64(args.seconds);
    match scenario {
        Scenario::StormOneRoom | Scenario::StormRooms => {
            let rooms = match scenario {
                Scenario::StormOneRoom => Rooms::One("room-1".into()),
                _ => Rooms::Spread(ROOMS),
            };
            let open = load::open_all(&target, args.connections).await?;
            let start = Instant::now() + warmup;
            // The CPU counters are read at the window's edges by a task of their own.
            let cpu = tokio::spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                let before = (cpu_time(pid)?, cpu_time(std::process::id())?);
                tokio::time::sleep_until((start + window).into()).await;
                let after = (cpu_time(pid)?, cpu_time(std::process::id())?);
                anyhow::Ok((after.0 - before.0, after.1 - before.1))
            });
            let measured = load::storm(open, &target, rooms, "u", start, window).await?;
            let (server_cpu, bench_cpu) = cpu.await??;
            Ok(Row {
                server: kind,
                measured,
                server_cpu,
                bench_cpu,
            })
        }
        Scenario::Burst => {
            // Warm up in another room, then fire into a fresh one.
            let open = load::open_all(&target, args.connections).await?;
            let warm = Rooms::One("warm-up".into());
            load::storm(open, &target, warm, "w", Instant::now(), warmup).await?;
            let open = load::open_all(&target, args.burst_connections).await?;
            let before = (cpu_time(pid)?, cpu_time(std::process::id())?);
            let measured = load::burst(open, &target, args.burst_joins, "burst").await?;
            let after = (cpu_time(pid)?, cpu_time(std::process::id())?);
            Ok(Row {
                server: kind,
                measured,
                server_cpu: after.0 - before.0,
                bench_cpu: after.1 - before.1,
            })
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn met(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

/// The tables, then the targets.
fn report(args: &Args, results: &[(Scenario, Vec<Row>)]) {
    println!();
    println!(
        "Storms: {} connections, {:.0} s measured after {:.0} s of warm-up; joins/s counts 2xx answers with a token inside the window; latencies of every join answered from the window's start on (those in flight at its end waited for). Burst: {} joins over {} connections, time from the first send to the last answer. Joins per connection: fewest-most counted on one connection. Server CPU: all its threads (share of one core), bench CPU: this load generator.",
        args.connections,
        args.seconds,
        args.warmup_seconds,
        args.burst_joins,
        args.burst_connections,
    );
    for (scenario, rows) in results {
        println!();
        println!("{}:", scenario.name());
        match scenario {
            Scenario::Burst => {
                println!(
                    "| server | joins | time | joins/s | p50 | p99 | max | errors | joins per connection | server CPU | server CPU per join | bench CPU |"
                );
                println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            }
            _ => {
                println!(
                    "| server | joins/s | joins | p50 | p99 | max | errors | joins per connection | server CPU | server CPU per join | bench CPU |"
                );
                println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            }
        }
        for row in rows {
            let m = &row.measured;
            let span = m.elapsed.as_secs_f64().max(1e-9);
            let share = |cpu: Duration| format!("{:.0}%", cpu.as_secs_f64() / span * 100.0);
            let per_join = format!(
                "{:.0} µs",
                row.server_cpu.as_secs_f64() * 1e6 / (m.joins.max(1)) as f64
            );
            let (p50, p99, max) = (
                ms(row.p(50.0)),
                ms(row.p(99.0)),
                ms(m.latencies.last().copied().unwrap_or_default()),
            );
            let spread = format!("{}-{}", m.per_connection.0, m.per_connection.1);
            match scenario {
                Scenario::Burst => println!(
                    "| {} | {} | {:.2} s | {:.0} | {p50} | {p99} | {max} | {} | {spread} | {} | {per_join} | {} |",
                    row.server.name(),
                    m.joins,
                    span,
                    m.per_second(),
                    m.errors.total(),
                    share(row.server_cpu),
                    share(row.bench_cpu),
                ),
                _ => println!(
                    "| {} | {:.0} | {} | {p50} | {p99} | {max} | {} | {spread} | {} | {per_join} | {} |",
                    row.server.name(),
                    m.per_second(),
                    m.joins,
                    m.errors.total(),
                    share(row.server_cpu),
                    share(row.bench_cpu),
                ),
            }
        }
        for row in rows {
            for line in row.measured.errors.lines() {
                println!("  {} error: {line}", row.server.name());
            }
        }
    }
    println!();
    for (scenario, rows) in results {
        let node = rows.iter().find(|r| r.server == Kind::NodeJoin);
        let floor = rows.iter().find(|r| r.server == Kind::DurableFloor);
        for convene in rows.iter().filter(|r| r.server.is_convene()) {
            // Each convene against the log-floor on its own database.
            let log_floor = rows.iter().find(|r| {
                r.server
                    == if convene.server.on_postgres() {
                        Kind::LogFloorPg
                    } else {
                        Kind::LogFloor
                    }
            });
            let name = format!("{} {}", scenario.name(), convene.server.name());
            let errors = convene.measured.errors.total();
            let clean = if errors == 0 {
                String::new()
            } else {
                format!(", {errors} errors")
            };
            let p99 = convene.p(99.0);
            match scenario {
                Scenario::Burst => {
                    let time = convene.measured.elapsed;
                    println!(
                        "{name}: burst time = {:.2} s (target <= {} s{clean}): {}",
                        time.as_secs_f64(),
                        TARGET_BURST.as_secs(),
                        met(time <= TARGET_BURST && errors == 0),
                    );
                    println!(
                        "{name}: burst p99 = {} (for reference; node-join: {})",
                        ms(p99),
                        node.map_or("not run".into(), |n| ms(n.p(99.0))),
                    );
                }
                _ => {
                    if let Some(floor) = floor {
                        println!(
                            "{name}: durable-floor/node throughput = {:.2} ({:.0} joins/s): what a durable join costs here without convene's code",
                            floor.measured.per_second()
                                / node.map_or(1e-9, |n| n.measured.per_second().max(1e-9)),
                            floor.measured.per_second(),
                        );
                    }
                    if let Some(log_floor) = log_floor {
                        let rate = log_floor.measured.per_second();
                        println!(
                            "{name}: {floor}/node throughput = {:.2} ({rate:.0} joins/s): what writing convene's rows durably costs here; convene/{floor} = {:.2}",
                            rate / node.map_or(1e-9, |n| n.measured.per_second().max(1e-9)),
                            convene.measured.per_second() / rate.max(1e-9),
                            floor = log_floor.server.name(),
                        );
                    }
                    if let Some(node) = node {
                        let ratio =
                            convene.measured.per_second() / node.measured.per_second().max(1e-9);
                        println!(
                            "{name}: convene/node throughput = {ratio:.2} ({:.0} vs {:.0} joins/s; target >= {TARGET_RATIO:.1}{clean}): {}",
                            convene.measured.per_second(),
                            node.measured.per_second(),
                            met(ratio >= TARGET_RATIO && errors == 0),
                        );
                    }
                    // A connection the server leaves waiting gives one slow latency while the others
                    // give thousands of fast ones, so the p99 alone would hide it: the target also
                    // asks that every connection got at least half its even share of the joins.
                    let (fewest, _) = convene.measured.per_connection;
                    let share = convene.measured.joins as f64 / args.connections.max(1) as f64;
                    let even = fewest as f64 >= share / 2.0;
                    let uneven = if even {
                        String::new()
                    } else {
                        format!(
                            ", uneven: a connection got {fewest} joins against an even share of {share:.0}, slowest join {}",
                            ms(convene
                                .measured
                                .latencies
                                .last()
                                .copied()
                                .unwrap_or_default())
                        )
                    };
                    println!(
                        "{name}: convene p99 = {:.1} ms (target <= {} ms{clean}{uneven}): {}",
                        p99.as_secs_f64() * 1000.0,
                        TARGET_P99.as_millis(),
                        met(p99 <= TARGET_P99 && errors == 0 && even),
                    );
                }
            }
        }
    }
}
