//! `axum-ceiling`: the join benchmark's ceiling, a bare axum POST route on the same path as seed
//! 002's surface that parses the JSON body (`roomName`, `uid`) and answers a small JSON with the
//! success body's keys (its `access_token` is `uid@roomName`, not a token). No auth, no signing,
//! no store: what the HTTP stack alone costs on this machine. Started by the benchmark
//! as `convene-join-bench serve-ceiling --port P` (a hidden mode of the same binary), on tokio's
//! default multi-threaded runtime, as a plain axum server would be.

use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Join {
    #[serde(rename = "roomName")]
    room_name: String,
    uid: String,
}

#[derive(Serialize)]
struct Joined {
    msg: &'static str,
    livekit_socket_url: &'static str,
    access_token: String,
}

async fn join(Json(join): Json<Join>) -> Json<Joined> {
    Json(Joined {
        msg: "Success",
        livekit_socket_url: "ws://127.0.0.1",
        access_token: format!("{}@{}", join.uid, join.room_name),
    })
}

/// Serves on `127.0.0.1:port` until killed.
pub fn serve(port: u16) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let app = Router::new()
                .route("/healthz", get(|| async { "ok" }))
                .route("/compat/livekit-join/", post(join));
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            axum::serve(listener, app).await?;
            Ok(())
        })
}
