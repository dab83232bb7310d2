//! Recording storage against a real S3-compatible server: moto in server mode (PyPI
//! `moto[server]`, installed into the workspace's `.venv` by `make venv`), started here on a free
//! loopback port. `CONVENE_MOTO_SERVER` names another `moto_server`; `CONVENE_SKIP_S3_TESTS=1`
//! skips the test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use convene::recording::storage::{RecordingStorage, StorageError};
use futures::TryStreamExt;

const BUCKET: &str = "convene-recordings";

/// The moto server process, stopped when dropped.
struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_server_path() -> Option<PathBuf> {
    let path = match std::env::var_os("CONVENE_MOTO_SERVER") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server"),
    };
    path.is_file().then_some(path)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_moto(exe: &PathBuf) -> Moto {
    let http = reqwest::Client::new();
    // A free port can be taken between the probe and moto's bind: a few tries.
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let port = free_port();
        let child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("moto.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        let mut moto = Moto {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = moto.child.try_wait().unwrap() {
                let err =
                    std::fs::read_to_string(moto._dir.path().join("moto.err")).unwrap_or_default();
                eprintln!("moto_server exited ({status}) on port {port}: {err}");
                break;
            }
            let answer = http
                .get(format!("http://127.0.0.1:{port}/"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|resp| resp.status().is_success()) {
                return moto;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port} within 60 s (log {})",
                moto.log.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    panic!("moto_server did not start (three tries)");
}

async fn collect(
    got: Result<
        (
            u64,
            futures::stream::BoxStream<'static, Result<bytes::Bytes, StorageError>>,
        ),
        StorageError,
    >,
) -> (u64, Vec<u8>) {
    let (size, stream) = got.unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    (size, chunks.concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_recording_storage_against_moto() {
    if std::env::var("CONVENE_SKIP_S3_TESTS").as_deref() == Ok("1") {
        eprintln!("CONVENE_SKIP_S3_TESTS=1: skipping the S3 storage test");
        return;
    }
    let Some(exe) = moto_server_path() else {
        panic!(
            "moto_server not found (CONVENE_MOTO_SERVER or .venv/bin/moto_server): run `make venv` \
             to install it, or set CONVENE_SKIP_S3_TESTS=1 to skip this test"
        );
    };
    let moto = start_moto(&exe).await;
    let endpoint = format!("http://127.0.0.1:{}", moto.port);

    // object_store cannot create buckets: moto takes an unsigned CreateBucket.
    let http = reqwest::Client::new();
    let resp = http
        .put(format!("{endpoint}/{BUCKET}"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "create bucket: {resp:?}");

    let env = |name: &str| match name {
        "AWS_ENDPOINT_URL" => Some(endpoint.clone()),
        "AWS_ACCESS_KEY_ID" => Some("test".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("test".into()),
        "AWS_REGION" => Some("us-east-1".into()),
        _ => None,
    };
    let storage = RecordingStorage::from_url_with(&format!("s3://{BUCKET}/rec"), env).unwrap();
    assert!(!storage.is_local());
    assert_eq!(
        storage.describe(),
        format!("s3://{BUCKET}/rec (endpoint {endpoint})")
    );

    let tmp = tempfile::tempdir().unwrap();
    // ~20 MiB: three parts of 8 MiB.
    let data: Vec<u8> = (0..20 * 1024 * 1024 + 4321)
        .map(|i: usize| (i % 251) as u8)
        .collect();
    let big = tmp.path().join("alice.webm");
    std::fs::write(&big, &data).unwrap();
    let small = tmp.path().join("bob.ogg");
    std::fs::write(&small, b"bob's audio").unwrap();

    let n = storage
        .put_file("m1/r1/alice-TR_a.webm", &big)
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(big.exists(), "an upload leaves the local file");
    assert_eq!(
        storage
            .put_file("m1/r1/bob-TR_b.ogg", &small)
            .await
            .unwrap(),
        11
    );
    assert_eq!(storage.put_file("m1/r10/x.ogg", &small).await.unwrap(), 11);

    // Sent as a multipart upload: S3's ETag for those ends in -<parts>.
    let head = http
        .head(format!("{endpoint}/{BUCKET}/rec/m1/r1/alice-TR_a.webm"))
        .send()
        .await
        .unwrap();
    let etag = head.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.trim_matches('"').ends_with("-3"), "etag {etag}");

    assert_eq!(
        storage.size("m1/r1/alice-TR_a.webm").await.unwrap(),
        data.len() as u64
    );
    assert!(matches!(
        storage.size("m1/r1/missing").await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        storage.get("m1/r1/missing", None).await,
        Err(StorageError::NotFound)
    ));

    let (size, whole) = collect(storage.get("m1/r1/alice-TR_a.webm", None).await).await;
    assert_eq!(size, data.len() as u64);
    assert!(whole == data, "whole object differs");
    // Across the boundary of the first two parts.
    let range = 8 * 1024 * 1024 - 1000..8 * 1024 * 1024 + 5000;
    let (size, part) = collect(
        storage
            .get(
                "m1/r1/alice-TR_a.webm",
                Some(range.start as u64..range.end as u64),
            )
            .await,
    )
    .await;
    assert_eq!(size, data.len() as u64);
    assert!(part == data[range], "range differs");
    // An end past the object is cut to it; an empty range is empty.
    let len = data.len() as u64;
    let (_, tail) = collect(
        storage
            .get("m1/r1/alice-TR_a.webm", Some(len - 10..len + 100))
            .await,
    )
    .await;
    assert_eq!(tail, &data[data.len() - 10..]);
    let (size, empty) = collect(storage.get("m1/r1/bob-TR_b.ogg", Some(3..3)).await).await;
    assert_eq!((size, empty.len()), (11, 0));
    let (_, bob) = collect(storage.get("m1/r1/bob-TR_b.ogg", Some(2..5)).await).await;
    assert_eq!(bob, b"b's");

    assert_eq!(
        storage.list("m1/r1").await.unwrap(),
        vec![
            ("m1/r1/alice-TR_a.webm".to_string(), len),
            ("m1/r1/bob-TR_b.ogg".to_string(), 11),
        ]
    );
    assert_eq!(storage.list("").await.unwrap().len(), 3);
    // The prefix of the URL is where they are in the bucket.
    let whole_bucket = RecordingStorage::from_url_with(&format!("s3://{BUCKET}"), env).unwrap();
    let keys: Vec<String> = whole_bucket
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        [
            "rec/m1/r1/alice-TR_a.webm",
            "rec/m1/r1/bob-TR_b.ogg",
            "rec/m1/r10/x.ogg"
        ]
    );

    // Segment-wise: m1/r1 does not cover m1/r10.
    assert_eq!(storage.delete_prefix("m1/r1").await.unwrap(), 2);
    assert_eq!(
        storage.list("").await.unwrap(),
        vec![("m1/r10/x.ogg".to_string(), 11)]
    );
    assert_eq!(storage.delete_prefix("m1/r1").await.unwrap(), 0);
    assert!(matches!(
        storage.put_file("../escape", &small).await,
        Err(StorageError::BadKey(_))
    ));

    // A failing backend (here a missing bucket) is an error, not a panic.
    let missing = RecordingStorage::from_url_with("s3://no-such-bucket", env).unwrap();
    assert!(missing.put_file("a/b", &small).await.is_err());
    drop(moto);
}
