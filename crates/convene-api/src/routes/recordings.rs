//! Recordings: start and stop (a host still in the meeting, or an admin), list, get with the
//! index, delete and download (the meeting's hosts and admins; downloads answer range requests).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use convene_core::ErrorCode;
use convene_core::event::RecordingFileKind;
use convene_core::ids::{MeetingId, RecordingId};
use convene_core::service::Caller;

use super::{HostCall, host_caller, meeting_id};
use crate::auth::AnyCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::state::AppState;
use crate::wire::{RecordingList, RecordingView};

fn recording_id(raw: &str) -> ApiResult<RecordingId> {
    Ok(RecordingId::parse(raw)?)
}

/// The meeting and recording in the path, and a host caller of the meeting.
fn on_recording(
    principal: &crate::auth::Principal,
    (id, rid): (String, String),
) -> ApiResult<(MeetingId, RecordingId, Caller)> {
    let id = meeting_id(&id)?;
    let caller = host_caller(principal, &id)?;
    Ok((id, recording_id(&rid)?, caller))
}

/// Start recording the live meeting: every published track is written as it arrives, and
/// everyone in the meeting is told (`recording.started`; the LiveKit room's `active_recording`).
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/recordings", tag = "recordings",
    params(("meeting_id" = String, Path)),
    responses((status = 201, body = RecordingView),
        (status = 409, description = "the meeting is not live, or a recording is running already")),
    security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn start(
    State(state): State<AppState>,
    call: HostCall,
) -> ApiResult<(StatusCode, axum::Json<RecordingView>)> {
    let recording = state
        .meetings
        .start_recording(&call.id, &call.caller)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RecordingView::of(&call.id, &recording)),
    ))
}

/// The meeting's recordings, oldest first (its hosts and admins).
#[utoipa::path(get, path = "/v1/meetings/{meeting_id}/recordings", tag = "recordings",
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = RecordingList)),
    security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    call: HostCall,
) -> ApiResult<axum::Json<RecordingList>> {
    let recordings = state.meetings.recordings(&call.id, &call.caller).await?;
    Ok(axum::Json(RecordingList {
        recordings: recordings
            .iter()
            .map(|r| RecordingView::of(&call.id, r))
            .collect(),
    }))
}

/// One recording with its files and its index (its meeting's hosts and admins).
#[utoipa::path(get, path = "/v1/meetings/{meeting_id}/recordings/{recording_id}", tag = "recordings",
    params(("meeting_id" = String, Path), ("recording_id" = String, Path)),
    responses((status = 200, body = RecordingView)),
    security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn get(
    State(state): State<AppState>,
    AnyCaller(principal): AnyCaller,
    Path(path): Path<(String, String)>,
) -> ApiResult<axum::Json<RecordingView>> {
    let (id, rid, caller) = on_recording(&principal, path)?;
    let recording = state.meetings.recording(&id, &caller, &rid).await?;
    Ok(axum::Json(RecordingView::of(&id, &recording)))
}

/// Stop the running recording (a host still in the meeting, or an admin). Its files are then
/// finished, composed and stored: `recording.ready` (or `recording.failed`) follows.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/recordings/{recording_id}/stop", tag = "recordings",
    params(("meeting_id" = String, Path), ("recording_id" = String, Path)),
    responses((status = 200, body = RecordingView),
        (status = 409, description = "the recording is not running")),
    security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn stop(
    State(state): State<AppState>,
    AnyCaller(principal): AnyCaller,
    Path(path): Path<(String, String)>,
) -> ApiResult<axum::Json<RecordingView>> {
    let (id, rid, caller) = on_recording(&principal, path)?;
    let recording = state.meetings.stop_recording(&id, &caller, &rid).await?;
    Ok(axum::Json(RecordingView::of(&id, &recording)))
}

/// Delete a recording that is not running or being finished, and its files.
#[utoipa::path(delete, path = "/v1/meetings/{meeting_id}/recordings/{recording_id}", tag = "recordings",
    params(("meeting_id" = String, Path), ("recording_id" = String, Path)),
    responses((status = 204, description = "Deleted"),
        (status = 409, description = "the recording is running or being finished")),
    security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    AnyCaller(principal): AnyCaller,
    Path(path): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (id, rid, caller) = on_recording(&principal, path)?;
    state.meetings.delete_recording(&id, &caller, &rid).await?;
    if let Some(files) = &state.recording_files
        && let Err(e) = files.delete(&id, &rid).await
    {
        // The recording is gone from the API; its files are left for an operator.
        tracing::warn!(meeting = %id, recording = %rid, error = %e, "recording files not deleted");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A single byte range of a file of `size` bytes, from a `Range` header (`bytes=a-b`,
/// `bytes=a-`, `bytes=-n`). `Ok(None)`: the whole file (no header, or one this server does not
/// take, such as several ranges, which RFC 9110 lets it ignore); `Err`: not within the file.
fn byte_range(header: Option<&str>, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.is_empty(), last.is_empty()) {
        (true, true) => return Ok(None),
        (true, false) => {
            let n: u64 = last.parse().map_err(|_| ())?;
            if n == 0 || size == 0 {
                return Err(());
            }
            size.saturating_sub(n)..size
        }
        (false, _) => {
            let start: u64 = first.parse().map_err(|_| ())?;
            let end = if last.is_empty() {
                size
            } else {
                let last: u64 = last.parse().map_err(|_| ())?;
                if last < start {
                    return Err(());
                }
                last.saturating_add(1).min(size)
            };
            if start >= size {
                return Err(());
            }
            start..end
        }
    };
    Ok(Some(range))
}

fn content_type(kind: RecordingFileKind, name: &str) -> &'static str {
    match kind {
        RecordingFileKind::Composite => "video/mp4",
        _ if name.ends_with(".mkv") => "video/x-matroska",
        RecordingFileKind::Audio => "audio/webm",
        RecordingFileKind::Video => "video/webm",
    }
}

/// Download one file of a recording (its meeting's hosts and admins). A `Range` header of one
/// range is answered `206` with that part; a range outside the file `416`.
#[utoipa::path(get, path = "/v1/meetings/{meeting_id}/recordings/{recording_id}/files/{name}", tag = "recordings",
    params(("meeting_id" = String, Path), ("recording_id" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "The file", content_type = "application/octet-stream"),
        (status = 206, description = "The requested range"),
        (status = 416, description = "The range is outside the file")),
    security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn download(
    State(state): State<AppState>,
    AnyCaller(principal): AnyCaller,
    Path((id, rid, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (id, rid, caller) = on_recording(&principal, (id, rid))?;
    let recording = state.meetings.recording(&id, &caller, &rid).await?;
    // Only a name the recording lists reaches the file store.
    let file = recording
        .file(&name)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the recording has no such file"))?;
    let files = state.recording_files.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "this deployment's recordings are written by LiveKit Egress into the LiveKit deployment's storage; fetch the file from there (its location)",
        )
    })?;
    let unavailable = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ApiError::new(ErrorCode::NotFound, "the file is missing from the store")
        } else {
            tracing::warn!(meeting = %id, recording = %rid, error = %e, "recording file unreadable");
            ApiError::new(ErrorCode::Unavailable, "the file store cannot be read now")
        }
    };
    // The size the recording lists is the stored file's (`put_file` answered it).
    let size = file.bytes;
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match byte_range(asked, size) {
        Ok(range) => range,
        Err(()) => {
            let mut refused = ApiError::new(
                ErrorCode::RangeNotSatisfiable,
                format!("the file has {size} bytes"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                refused.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(refused);
        }
    };
    let stream = files
        .open(&id, &rid, &name, range.clone())
        .await
        .map_err(unavailable)?;
    let mut response = Response::new(Body::from_stream(stream));
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(file.kind, &name)),
    );
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        out.insert(header::CONTENT_DISPOSITION, value);
    }
    let length = match &range {
        Some(r) => r.end - r.start,
        None => size,
    };
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(r) = range {
        let value = format!("bytes {}-{}/{size}", r.start, r.end - 1);
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(header::CONTENT_RANGE, value);
        }
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(byte_range(None, 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=0-9"), 100), Ok(Some(0..10)));
        assert_eq!(byte_range(Some("bytes=90-"), 100), Ok(Some(90..100)));
        assert_eq!(byte_range(Some("bytes=-10"), 100), Ok(Some(90..100)));
        assert_eq!(byte_range(Some("bytes=-500"), 100), Ok(Some(0..100)));
        assert_eq!(byte_range(Some("bytes=50-500"), 100), Ok(Some(50..100)));
        // Several ranges, or another unit: the whole file.
        assert_eq!(byte_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(byte_range(Some("items=0-1"), 100), Ok(None));
        // Outside the file, backwards, or not numbers: refused.
        assert_eq!(byte_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=9-3"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=-0"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=x-3"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=0-"), 0), Err(()));
    }
}
