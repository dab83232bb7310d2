//! The composite of a recording: one MP4 people can watch, built from the per-track files by
//! ffmpeg running as a child process.
//!
//! A recording leaves one file per published track (WebM with VP8 or Opus, Matroska with H.264),
//! each starting at timestamp 0, with the offset of its first frame from the recording's start.
//! [`ffmpeg_args`] turns that into one ffmpeg command line (pure, tested without ffmpeg);
//! [`compose`] runs it, gently (`nice`, few threads), with a timeout.
//!
//! The shape of the command:
//!
//! - input 0 is a black background (`-f lavfi -i color=…:r=25:d=<total>`): it sets the output's
//!   size, constant frame rate and length. It is an *input*, not a source inside the graph, so
//!   that when ffmpeg rebuilds the video graph (it does when a track's resolution changes mid-file,
//!   which a recording that follows simulcast layers does) nothing restarts from zero: every frame
//!   in the graph carries its absolute time on the recording's timeline.
//! - each video track: `setpts=PTS+<start>/TB` (its place on the timeline), scaled into its tile
//!   keeping the aspect ratio and padded with black, then `overlay`ed on the background at the
//!   tile's position with `eof_action=pass` (nothing before its first frame, nothing after its
//!   last) and, when the layout follows spans, `enable='…'` for the times the person is on screen.
//!   Tiles are one per person (all of a person's video tracks use the same tile), in the order of
//!   first appearance; the grid is fixed for the whole recording.
//! - audio, in a graph of its own (a video graph rebuild does not disturb it): each track has its
//!   gaps filled with silence (`aresample=async=1`), is delayed by its start (`adelay`), and all are
//!   mixed (`amix`, no normalisation); with no audio track, silence (`anullsrc`).
//! - output: H.264 (libx264 veryfast, CRF 28, yuv420p) and AAC in MP4 with `+faststart`, cut to
//!   exactly the recording's length (`-t`).

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Frame rate of the composite.
pub const FPS: u32 = 25;
/// How much of ffmpeg's stderr is kept for an error.
const STDERR_TAIL: usize = 2048;
/// Threads for the encoder: the composite runs next to a live media server.
const ENCODER_THREADS: u32 = 2;
/// A filter graph longer than this goes to ffmpeg in a file (`-filter_complex_script`): Linux
/// refuses to start a program with one argument over 128 KiB (many spans make long `enable`s).
const LONG_ARG: usize = 64 * 1024;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Audio,
    Video,
}

/// One recorded track's file and its place on the recording's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompositeTrack {
    pub path: PathBuf,
    pub identity: String,
    /// Display name (not drawn yet: no labels).
    pub name: String,
    pub kind: TrackKind,
    /// Offset of the file's first frame from the recording's start.
    pub start_ms: u64,
    pub duration_ms: u64,
}

/// Who was visible when: a span during which a person's video belongs on screen (from the event
/// log: a speaker on a stage, or any present participant in a meeting). Times are relative to the
/// recording's start; `to_ms` is exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub identity: String,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// How the tiles are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One tile per person with video, in a grid fixed for the whole recording; a tile shows its
    /// person during their spans (always, when there are no spans).
    Grid,
    /// At each time, the identity of the first span (in `spans` order) covering it large, the other
    /// people on screen small in a strip below, each in a slot of its own. Without spans, a grid.
    Speaker,
}

/// What to compose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompositeJob {
    pub tracks: Vec<CompositeTrack>,
    pub spans: Vec<Span>,
    pub total_ms: u64,
    pub layout: Layout,
    pub output: PathBuf,
    pub width: u32,
    pub height: u32,
}

/// The composite written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composite {
    pub path: PathBuf,
    pub bytes: u64,
    /// As the MP4 says (its `mvhd`).
    pub duration_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CompositeError {
    /// The program (ffmpeg) is not installed, or not where configured.
    #[error(
        "cannot compose the recording: the program `{program}` was not found (install ffmpeg or configure its path)"
    )]
    FfmpegMissing { program: String },
    /// ffmpeg ran and failed.
    #[error("ffmpeg failed ({status}): {stderr_tail}")]
    Failed { status: String, stderr_tail: String },
    /// No track falls within the recording (or the recording has no length).
    #[error("nothing to compose: no track falls within the recording")]
    NothingToCompose,
    #[error("composite: {0}")]
    Io(#[from] std::io::Error),
    /// ffmpeg did not finish in time (it was killed).
    #[error("ffmpeg did not finish in time and was killed")]
    TimedOut,
}

/// A rectangle of the output frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

fn even(v: u32) -> u32 {
    (v & !1).max(2)
}

/// The grid's columns and rows for `n` tiles: 1 = full, 2 = side by side, 3-4 = 2x2, 5-6 = 3x2,
/// 7-9 = 3x3, then 4 columns…
pub fn grid_shape(n: usize) -> (u32, u32) {
    if n == 0 {
        return (1, 1);
    }
    let mut cols = 1usize;
    while cols * cols < n {
        cols += 1;
    }
    let rows = n.div_ceil(cols);
    (cols as u32, rows as u32)
}

/// The tiles of a grid of `n` in a `width`x`height` frame, row by row; the grid is centred and so
/// is an incomplete last row. Sizes and positions are even (yuv420p).
pub fn grid(n: usize, width: u32, height: u32) -> Vec<Rect> {
    let (cols, rows) = grid_shape(n);
    let (tw, th) = (even(width / cols), even(height / rows));
    let x0 = (width.saturating_sub(cols * tw) / 2) & !1;
    let y0 = (height.saturating_sub(rows * th) / 2) & !1;
    (0..n as u32)
        .map(|i| {
            let (row, col) = (i / cols, i % cols);
            let in_row = (n as u32 - row * cols).min(cols);
            let row_off = ((cols - in_row) * tw / 2) & !1;
            Rect {
                x: x0 + row_off + col * tw,
                y: y0 + row * th,
                w: tw,
                h: th,
            }
        })
        .collect()
}

/// Sorted, merged half-open intervals (ms), clipped to `[0, total)`, empty ones dropped.
fn merge(mut v: Vec<(u64, u64)>, total_ms: u64) -> Vec<(u64, u64)> {
    v.retain_mut(|(a, b)| {
        *b = (*b).min(total_ms);
        a < b
    });
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Milliseconds as ffmpeg seconds ("2.5" → "2.500").
fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The `enable` expression of an overlay shown during `intervals` (merged, ms): `None` when that
/// is the whole recording.
///
/// Not a sum of one term per interval: ffmpeg's expression parser gives up on a chain of about a
/// hundred `+`. A binary search instead (`if(lt(t,m),left,right)`): nesting and evaluation grow
/// with the logarithm of the number of intervals.
pub fn enable_expr(intervals: &[(u64, u64)], total_ms: u64) -> Option<String> {
    fn search(intervals: &[(u64, u64)]) -> String {
        match intervals {
            [] => "0".into(),
            [(a, b)] => format!("gte(t,{})*lt(t,{})", secs(*a), secs(*b)),
            _ => {
                let (left, right) = intervals.split_at(intervals.len() / 2);
                format!(
                    "if(lt(t,{}),{},{})",
                    secs(right[0].0),
                    search(left),
                    search(right)
                )
            }
        }
    }
    if intervals.len() == 1 && intervals[0].0 == 0 && intervals[0].1 >= total_ms {
        return None;
    }
    Some(search(intervals))
}

/// One place a person's video is drawn: a rectangle, during some times (`None`: always).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    rect: Rect,
    when: Option<Vec<(u64, u64)>>,
}

/// A person with video: their placements.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tile {
    identity: String,
    placements: Vec<Placement>,
}

/// What the command is made of: the inputs used (tracks within the recording) and the tiles.
#[derive(Debug)]
struct Plan<'a> {
    video: Vec<&'a CompositeTrack>,
    audio: Vec<&'a CompositeTrack>,
    tiles: Vec<Tile>,
    width: u32,
    height: u32,
}

impl Plan<'_> {
    fn is_empty(&self) -> bool {
        self.video.is_empty() && self.audio.is_empty()
    }
}

fn plan(job: &CompositeJob) -> Plan<'_> {
    let (width, height) = (even(job.width).max(16), even(job.height).max(16));
    let total = job.total_ms;
    let within = |t: &&CompositeTrack| t.start_ms < total;
    let audio: Vec<&CompositeTrack> = job
        .tracks
        .iter()
        .filter(|t| t.kind == TrackKind::Audio)
        .filter(within)
        .collect();

    // The spans of each identity, merged; no spans at all: everyone whenever they have frames.
    let spans_of = |identity: &str| {
        merge(
            job.spans
                .iter()
                .filter(|s| s.identity == identity)
                .map(|s| (s.from_ms, s.to_ms))
                .collect(),
            total,
        )
    };
    let follow_spans = !job.spans.is_empty();

    // People with video, in the order of first appearance (first frame, or first span).
    let mut people: Vec<(u64, usize, String)> = Vec::new();
    for (i, t) in job.tracks.iter().enumerate() {
        if t.kind != TrackKind::Video || t.start_ms >= total {
            continue;
        }
        let first = if follow_spans {
            match spans_of(&t.identity).first() {
                Some(&(a, _)) => a.max(t.start_ms),
                None => continue,
            }
        } else {
            t.start_ms
        };
        match people.iter_mut().find(|p| p.2 == t.identity) {
            Some(p) => p.0 = p.0.min(first),
            None => people.push((first, i, t.identity.clone())),
        }
    }
    people.sort();
    let identities: Vec<String> = people.into_iter().map(|p| p.2).collect();

    let tiles = if job.layout == Layout::Speaker && follow_spans && identities.len() > 1 {
        speaker_tiles(job, &identities, width, height)
    } else {
        grid(identities.len(), width, height)
            .into_iter()
            .zip(&identities)
            .map(|(rect, identity)| Tile {
                identity: identity.clone(),
                placements: vec![Placement {
                    rect,
                    when: follow_spans.then(|| spans_of(identity)),
                }],
            })
            .collect()
    };

    let mut video: Vec<&CompositeTrack> = job
        .tracks
        .iter()
        .filter(|t| t.kind == TrackKind::Video)
        .filter(within)
        .filter(|t| {
            tiles.iter().any(|tile| {
                tile.identity == t.identity
                    && tile.placements.iter().any(|p| {
                        p.when
                            .as_ref()
                            .is_none_or(|w| w.iter().any(|&(_, b)| b > t.start_ms))
                    })
            })
        })
        .collect();
    // Later tracks over earlier ones (a person who published again).
    video.sort_by_key(|t| t.start_ms);
    Plan {
        video,
        audio,
        tiles,
        width,
        height,
    }
}

/// The speaker layout: at each time, the identity of the first span (in `spans` order) covering it
/// large (top), the other people with a span covering it in a strip below, each in a slot of its
/// own (empty while that person is the large one).
fn speaker_tiles(job: &CompositeJob, identities: &[String], width: u32, height: u32) -> Vec<Tile> {
    let total = job.total_ms;
    let strip_h = even(height / 4);
    let big = Rect {
        x: 0,
        y: 0,
        w: width,
        h: even(height - strip_h),
    };
    let slot_w = even(width / identities.len() as u32);
    let x0 = (width.saturating_sub(slot_w * identities.len() as u32) / 2) & !1;

    let mut bounds: Vec<u64> = job
        .spans
        .iter()
        .flat_map(|s| [s.from_ms.min(total), s.to_ms.min(total)])
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut large: Vec<Vec<(u64, u64)>> = vec![Vec::new(); identities.len()];
    let mut small: Vec<Vec<(u64, u64)>> = vec![Vec::new(); identities.len()];
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        let active = |s: &&Span| s.from_ms <= a && s.to_ms >= b;
        let speaker = job
            .spans
            .iter()
            .filter(active)
            .find_map(|s| identities.iter().position(|i| *i == s.identity));
        for (k, identity) in identities.iter().enumerate() {
            if Some(k) == speaker {
                large[k].push((a, b));
            } else if job
                .spans
                .iter()
                .filter(active)
                .any(|s| s.identity == *identity)
            {
                small[k].push((a, b));
            }
        }
    }
    identities
        .iter()
        .enumerate()
        .map(|(k, identity)| Tile {
            identity: identity.clone(),
            placements: [
                (big, std::mem::take(&mut large[k])),
                (
                    Rect {
                        x: x0 + k as u32 * slot_w,
                        y: big.h,
                        w: slot_w,
                        h: strip_h,
                    },
                    std::mem::take(&mut small[k]),
                ),
            ]
            .into_iter()
            .map(|(rect, when)| (rect, merge(when, total)))
            .filter(|(_, when)| !when.is_empty())
            .map(|(rect, when)| Placement {
                rect,
                when: Some(when),
            })
            .collect(),
        })
        .collect()
}

/// A file as an ffmpeg input or output: always the file protocol (a name with a colon is not a
/// URL).
fn file_arg(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// The ffmpeg argument list for a job (without the program), writing to `job.output`.
pub fn ffmpeg_args(job: &CompositeJob) -> Vec<String> {
    args_to(job, &plan(job), &job.output)
}

fn args_to(job: &CompositeJob, plan: &Plan<'_>, output: &Path) -> Vec<String> {
    let total = secs(job.total_ms);
    let (w, h) = (plan.width, plan.height);
    let mut args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "warning",
        "-y",
        "-filter_complex_threads",
        "1",
    ]
    .map(String::from)
    .to_vec();
    let add_input = |args: &mut Vec<String>, pre: &[&str], path: String| {
        args.extend(pre.iter().map(|s| s.to_string()));
        args.extend(["-i".into(), path]);
    };
    // Input 0: the black background, the output's size, rate and length.
    add_input(
        &mut args,
        &["-f", "lavfi"],
        format!("color=c=black:s={w}x{h}:r={FPS}:d={total}"),
    );
    let first_video = 1;
    for t in &plan.video {
        add_input(&mut args, &["-threads", "1"], file_arg(&t.path));
    }
    let first_audio = first_video + plan.video.len();
    for t in &plan.audio {
        add_input(&mut args, &["-threads", "1"], file_arg(&t.path));
    }

    // Video.
    let mut graph: Vec<String> = Vec::new();
    let mut last = "0:v".to_string();
    for (n, t) in plan.video.iter().enumerate() {
        let Some(tile) = plan.tiles.iter().find(|tile| tile.identity == t.identity) else {
            continue;
        };
        let placements: Vec<&Placement> = tile
            .placements
            .iter()
            .filter(|p| {
                p.when
                    .as_ref()
                    .is_none_or(|w| w.iter().any(|&(_, b)| b > t.start_ms))
            })
            .collect();
        if placements.is_empty() {
            continue;
        }
        let input = first_video + n;
        let shift = format!("[{input}:v]setpts=PTS+{}/TB", secs(t.start_ms));
        let fit = |r: &Rect| {
            format!(
                "scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2,\
                 pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1",
                w = r.w,
                h = r.h
            )
        };
        if placements.len() == 1 {
            graph.push(format!("{shift},{}[t{n}p0]", fit(&placements[0].rect)));
        } else {
            let outs: String = (0..placements.len())
                .map(|p| format!("[t{n}s{p}]"))
                .collect();
            graph.push(format!("{shift},split={}{outs}", placements.len()));
            for (p, placement) in placements.iter().enumerate() {
                graph.push(format!("[t{n}s{p}]{}[t{n}p{p}]", fit(&placement.rect)));
            }
        }
        for (p, placement) in placements.iter().enumerate() {
            let enable = placement
                .when
                .as_ref()
                .and_then(|when| enable_expr(when, job.total_ms))
                .map(|e| format!(":enable='{e}'"))
                .unwrap_or_default();
            let out = format!("o{n}p{p}");
            graph.push(format!(
                "[{last}][t{n}p{p}]overlay=x={}:y={}:eof_action=pass{enable}[{out}]",
                placement.rect.x, placement.rect.y
            ));
            last = out;
        }
    }
    graph.push(format!("[{last}]format=yuv420p[vout]"));
    args.extend(["-filter_complex".into(), graph.join(";")]);

    // Audio: a graph of its own.
    let mut graph: Vec<String> = Vec::new();
    for (n, t) in plan.audio.iter().enumerate() {
        graph.push(format!(
            "[{}:a]aresample=48000:async=1:first_pts=0,\
             aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo,\
             adelay={}:all=1[a{n}]",
            first_audio + n,
            t.start_ms
        ));
    }
    match plan.audio.len() {
        0 => graph.push("anullsrc=r=48000:cl=stereo[aout]".into()),
        1 => graph.push("[a0]apad[aout]".into()),
        n => {
            let ins: String = (0..n).map(|i| format!("[a{i}]")).collect();
            graph.push(format!(
                "{ins}amix=inputs={n}:normalize=0:dropout_transition=0,apad[aout]"
            ));
        }
    }
    args.extend(["-filter_complex".into(), graph.join(";")]);

    args.extend(
        [
            "-map", "[vout]", "-map", "[aout]", "-c:v", "libx264", "-preset", "veryfast", "-crf",
            "28", "-pix_fmt", "yuv420p", "-r",
        ]
        .map(String::from),
    );
    args.push(FPS.to_string());
    args.extend(
        [
            "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2", "-threads",
        ]
        .map(String::from),
    );
    args.push(ENCODER_THREADS.to_string());
    args.extend(["-t".into(), total]);
    args.extend(["-movflags", "+faststart", "-f", "mp4"].map(String::from));
    args.push(file_arg(output));
    args
}

/// `program` as a path to run: as given when it has a directory, else looked up in `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    fn runnable(p: &Path) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        }
        #[cfg(not(unix))]
        {
            p.is_file()
        }
    }
    if program.is_empty() {
        return None;
    }
    let path = Path::new(program);
    if path.components().count() > 1 {
        return runnable(path).then(|| path.to_path_buf());
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|d| d.join(program))
        .find(|p| runnable(p))
}

/// Removes the partial output unless disarmed (also when the future is dropped).
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Runs `program` (ffmpeg) for `job`: niced when `nice` is there, without stdin, stderr kept
/// (its last 2 KB, for the error), killed after `timeout`. Writes next to `job.output` first and
/// renames on success, so the output is never a half-written file. Returns the output's size and
/// the duration its MP4 header gives.
pub async fn compose(
    program: &str,
    job: &CompositeJob,
    timeout: Duration,
) -> Result<Composite, CompositeError> {
    if job.total_ms == 0 || plan(job).is_empty() {
        return Err(CompositeError::NothingToCompose);
    }
    let missing = || CompositeError::FfmpegMissing {
        program: program.to_string(),
    };
    let resolved = find_program(program).ok_or_else(missing)?;

    // A file ffmpeg cannot read (empty, only a header: a track that never got a frame) would fail
    // the whole composite: such tracks are left out, when ffprobe is there to tell.
    let ffprobe = Some(resolved.with_file_name("ffprobe"))
        .filter(|p| find_program(&p.to_string_lossy()).is_some())
        .or_else(|| find_program("ffprobe"));
    let mut readable = job.clone();
    if let Some(ffprobe) = &ffprobe {
        let used: Vec<PathBuf> = {
            let plan = plan(job);
            plan.video
                .iter()
                .chain(&plan.audio)
                .map(|t| t.path.clone())
                .collect()
        };
        let mut unreadable = Vec::new();
        for path in used {
            if !unreadable.contains(&path) && !has_packets(ffprobe, &path, timeout).await {
                tracing::warn!(file = %path.display(), "composite: leaving out a track without frames");
                unreadable.push(path);
            }
        }
        readable.tracks.retain(|t| !unreadable.contains(&t.path));
    }
    let job = &readable;
    let plan = plan(job);
    if plan.is_empty() {
        return Err(CompositeError::NothingToCompose);
    }
    if let Some(dir) = job.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut partial_name = job.output.clone().into_os_string();
    partial_name.push(".partial");
    let partial = Partial(Some(PathBuf::from(partial_name)));
    let partial_path = partial.0.clone().unwrap_or_default();
    let mut args = args_to(job, &plan, &partial_path);
    let mut scripts = Vec::new();
    for i in 1..args.len() {
        if args[i - 1] == "-filter_complex" && args[i].len() > LONG_ARG {
            let mut name = partial_path.clone().into_os_string();
            name.push(format!(".graph{i}"));
            let script = Partial(Some(PathBuf::from(name)));
            let path = script.0.clone().unwrap_or_default();
            tokio::fs::write(&path, &args[i]).await?;
            args[i - 1] = "-filter_complex_script".into();
            args[i] = path.to_string_lossy().into_owned();
            scripts.push(script);
        }
    }

    let mut command = match find_program("nice") {
        Some(nice) => {
            let mut c = Command::new(nice);
            c.args(["-n", "10"]).arg(&resolved);
            c
        }
        None => Command::new(&resolved),
    };
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    tracing::info!(
        output = %job.output.display(),
        video = plan.video.len(),
        audio = plan.audio.len(),
        tiles = plan.tiles.len(),
        total_ms = job.total_ms,
        "composite: running ffmpeg"
    );
    tracing::debug!(program = %resolved.display(), ?args, "composite: command");
    let mut child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => missing(),
        _ => CompositeError::Io(e),
    })?;

    let mut stderr = child.stderr.take();
    let tail = tokio::spawn(async move {
        let mut kept: VecDeque<u8> = VecDeque::with_capacity(STDERR_TAIL * 2);
        let mut buf = [0u8; 4096];
        if let Some(stderr) = stderr.as_mut() {
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                kept.extend(&buf[..n]);
                let excess = kept.len().saturating_sub(STDERR_TAIL);
                kept.drain(..excess);
            }
        }
        String::from_utf8_lossy(kept.make_contiguous())
            .trim()
            .to_string()
    });

    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            let _ = child.kill().await;
            tail.abort();
            tracing::warn!(output = %job.output.display(), ?timeout, "composite: ffmpeg timed out");
            return Err(CompositeError::TimedOut);
        }
    };
    let stderr_tail = tail.await.unwrap_or_default();
    if !status.success() {
        tracing::warn!(output = %job.output.display(), %status, stderr = %stderr_tail, "composite: ffmpeg failed");
        return Err(CompositeError::Failed {
            status: status.to_string(),
            stderr_tail,
        });
    }

    drop(scripts);
    tokio::fs::rename(&partial_path, &job.output).await?;
    let mut partial = partial;
    partial.0 = None;
    let bytes = tokio::fs::metadata(&job.output).await?.len();
    let path = job.output.clone();
    let duration_ms = tokio::task::spawn_blocking(move || mp4_duration_ms(&path))
        .await
        .map_err(std::io::Error::other)??;
    tracing::info!(
        output = %job.output.display(),
        bytes,
        duration_ms,
        took_ms = started.elapsed().as_millis() as u64,
        "composite: written"
    );
    Ok(Composite {
        path: job.output.clone(),
        bytes,
        duration_ms,
    })
}

/// Whether ffprobe reads at least one packet of `path`; true when it cannot tell (it did not run
/// or took too long: ffmpeg will say).
async fn has_packets(ffprobe: &Path, path: &Path, timeout: Duration) -> bool {
    let mut command = Command::new(ffprobe);
    command
        .args(["-v", "error", "-read_intervals", "%+#1"])
        .args(["-show_entries", "packet=stream_index", "-of", "csv=p=0"])
        .arg(file_arg(path))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(timeout.min(Duration::from_secs(30)), command.output()).await {
        Ok(Ok(out)) => out.status.success() && !out.stdout.trim_ascii().is_empty(),
        Ok(Err(_)) | Err(_) => true,
    }
}

/// The duration an MP4 file's movie header (`moov/mvhd`) gives, in milliseconds.
pub fn mp4_duration_ms(path: &Path) -> std::io::Result<u64> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();

    // Finds the box `kind` among the boxes in [from, to): its payload's [start, end).
    let mut find = |kind: &[u8; 4], from: u64, to: u64| -> std::io::Result<Option<(u64, u64)>> {
        let mut at = from;
        while at + 8 <= to {
            f.seek(SeekFrom::Start(at))?;
            let mut head = [0u8; 8];
            f.read_exact(&mut head)?;
            let mut size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
            let mut header = 8;
            if size == 1 {
                let mut large = [0u8; 8];
                f.read_exact(&mut large)?;
                size = u64::from_be_bytes(large);
                header = 16;
            } else if size == 0 {
                size = to - at;
            }
            if size < header || at + size > to {
                return Err(invalid("mp4: a box overruns its parent"));
            }
            if &head[4..8] == kind {
                return Ok(Some((at + header, at + size)));
            }
            at += size;
        }
        Ok(None)
    };
    let (moov, moov_end) = find(b"moov", 0, len)?.ok_or_else(|| invalid("mp4: no moov"))?;
    let (mvhd, mvhd_end) = find(b"mvhd", moov, moov_end)?.ok_or_else(|| invalid("mp4: no mvhd"))?;
    let mut body = vec![0u8; (mvhd_end - mvhd).min(128) as usize];
    f.seek(SeekFrom::Start(mvhd))?;
    f.read_exact(&mut body)?;
    let be32 = |b: &[u8]| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let (timescale, duration) = match body.first() {
        Some(0) if body.len() >= 20 => (be32(&body[12..16]), be32(&body[16..20])),
        Some(1) if body.len() >= 32 => (
            be32(&body[20..24]),
            u64::from_be_bytes(body[24..32].try_into().unwrap_or_default()),
        ),
        _ => return Err(invalid("mp4: bad mvhd")),
    };
    if timescale == 0 {
        return Err(invalid("mp4: mvhd timescale 0"));
    }
    Ok((u128::from(duration) * 1000 / u128::from(timescale)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(
        path: &str,
        identity: &str,
        kind: TrackKind,
        start_ms: u64,
        duration_ms: u64,
    ) -> CompositeTrack {
        CompositeTrack {
            path: PathBuf::from(path),
            identity: identity.into(),
            name: identity.to_uppercase(),
            kind,
            start_ms,
            duration_ms,
        }
    }

    fn span(identity: &str, from_ms: u64, to_ms: u64) -> Span {
        Span {
            identity: identity.into(),
            from_ms,
            to_ms,
        }
    }

    fn job(
        tracks: Vec<CompositeTrack>,
        spans: Vec<Span>,
        total_ms: u64,
        output: &Path,
    ) -> CompositeJob {
        CompositeJob {
            tracks,
            spans,
            total_ms,
            layout: Layout::Grid,
            output: output.to_path_buf(),
            width: 640,
            height: 360,
        }
    }

    fn r(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }

    #[test]
    fn grid_shapes() {
        let shapes: Vec<(u32, u32)> = (1..=10).map(grid_shape).collect();
        assert_eq!(
            shapes,
            [
                (1, 1),
                (2, 1),
                (2, 2),
                (2, 2),
                (3, 2),
                (3, 2),
                (3, 3),
                (3, 3),
                (3, 3),
                (4, 3)
            ]
        );
    }

    #[test]
    fn grid_positions() {
        assert_eq!(grid(1, 1280, 720), [r(0, 0, 1280, 720)]);
        assert_eq!(grid(2, 1280, 720), [r(0, 0, 640, 720), r(640, 0, 640, 720)]);
        assert_eq!(
            grid(4, 1280, 720),
            [
                r(0, 0, 640, 360),
                r(640, 0, 640, 360),
                r(0, 360, 640, 360),
                r(640, 360, 640, 360)
            ]
        );
        // 3 + 2, the last row centred; 1280 / 3 = 426 leaves 2 px, the grid is centred (1 → 0, even).
        assert_eq!(
            grid(5, 1280, 720),
            [
                r(0, 0, 426, 360),
                r(426, 0, 426, 360),
                r(852, 0, 426, 360),
                r(212, 360, 426, 360),
                r(638, 360, 426, 360)
            ]
        );
        // 3x3 in an odd size: even tiles, inside the frame.
        for rect in grid(9, 641, 361) {
            assert!(rect.x % 2 == 0 && rect.y % 2 == 0 && rect.w % 2 == 0 && rect.h % 2 == 0);
            assert!(rect.x + rect.w <= 641 && rect.y + rect.h <= 361, "{rect:?}");
        }
    }

    #[test]
    fn spans_become_enable_expressions() {
        let merged = merge(
            vec![
                (3000, 4000),
                (0, 1000),
                (500, 1500),
                (4000, 9000),
                (7000, 7000),
            ],
            5000,
        );
        assert_eq!(merged, [(0, 1500), (3000, 5000)]);
        assert_eq!(
            enable_expr(&merged, 5000).as_deref(),
            Some("if(lt(t,3.000),gte(t,0.000)*lt(t,1.500),gte(t,3.000)*lt(t,5.000))")
        );
        assert_eq!(
            enable_expr(&[(0, 1000), (2000, 3000), (4000, 4500)], 5000).as_deref(),
            Some(
                "if(lt(t,2.000),gte(t,0.000)*lt(t,1.000),\
                 if(lt(t,4.000),gte(t,2.000)*lt(t,3.000),gte(t,4.000)*lt(t,4.500)))"
            )
        );
        assert_eq!(enable_expr(&[(0, 5000)], 5000), None);
        assert_eq!(enable_expr(&[], 5000).as_deref(), Some("0"));
    }

    fn two_people(spans: Vec<Span>) -> CompositeJob {
        job(
            vec![
                track("/r/a.webm", "alice", TrackKind::Video, 0, 4000),
                track("/r/a-mic.webm", "alice", TrackKind::Audio, 0, 4000),
                track("/r/b.webm", "bob", TrackKind::Video, 2000, 3000),
                track("/r/b-mic.webm", "bob", TrackKind::Audio, 2000, 3000),
            ],
            spans,
            5000,
            Path::new("/r/out.mp4"),
        )
    }

    fn filter_graphs(args: &[String]) -> Vec<&str> {
        args.windows(2)
            .filter(|w| w[0] == "-filter_complex")
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn args_for_two_people() {
        let args = ffmpeg_args(&two_people(vec![]));
        let inputs: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "-i")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(
            inputs,
            [
                "color=c=black:s=640x360:r=25:d=5.000",
                "file:/r/a.webm",
                "file:/r/b.webm",
                "file:/r/a-mic.webm",
                "file:/r/b-mic.webm"
            ]
        );
        let graphs = filter_graphs(&args);
        assert_eq!(graphs.len(), 2);
        let video: Vec<&str> = graphs[0].split(';').collect();
        let fit = "scale=320:360:force_original_aspect_ratio=decrease:force_divisible_by=2,\
                   pad=320:360:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1";
        assert_eq!(
            video,
            [
                format!("[1:v]setpts=PTS+0.000/TB,{fit}[t0p0]").as_str(),
                "[0:v][t0p0]overlay=x=0:y=0:eof_action=pass[o0p0]",
                format!("[2:v]setpts=PTS+2.000/TB,{fit}[t1p0]").as_str(),
                "[o0p0][t1p0]overlay=x=320:y=0:eof_action=pass[o1p0]",
                "[o1p0]format=yuv420p[vout]",
            ]
        );
        assert!(graphs[1].contains("[3:a]aresample=48000:async=1:first_pts=0,"));
        assert!(graphs[1].contains("adelay=0:all=1[a0]"));
        assert!(graphs[1].contains("[4:a]aresample"));
        assert!(graphs[1].contains("adelay=2000:all=1[a1]"));
        assert!(
            graphs[1]
                .ends_with("[a0][a1]amix=inputs=2:normalize=0:dropout_transition=0,apad[aout]")
        );
        let tail = args[args.len() - 9..].join(" ");
        assert_eq!(
            tail,
            "-threads 2 -t 5.000 -movflags +faststart -f mp4 file:/r/out.mp4"
        );
        assert!(args.windows(2).any(|w| w == ["-c:v", "libx264"]));
        assert!(args.windows(2).any(|w| w == ["-c:a", "aac"]));
    }

    #[test]
    fn args_follow_spans() {
        // Bob is on screen from 3 s only; carol has a span but no video; dave has video, no span.
        let mut job = two_people(vec![
            span("alice", 0, 5000),
            span("bob", 3000, 9000),
            span("carol", 0, 5000),
        ]);
        job.tracks
            .push(track("/r/d.webm", "dave", TrackKind::Video, 0, 5000));
        let args = ffmpeg_args(&job);
        assert!(
            !args.iter().any(|a| a.contains("d.webm")),
            "dave is never on screen"
        );
        let video = filter_graphs(&args)[0];
        assert!(
            video.contains("[0:v][t0p0]overlay=x=0:y=0:eof_action=pass[o0p0]"),
            "{video}"
        );
        assert!(
            video.contains("[o0p0][t1p0]overlay=x=320:y=0:eof_action=pass:enable='gte(t,3.000)*lt(t,5.000)'[o1p0]"),
            "{video}"
        );
    }

    #[test]
    fn tiles_in_order_of_first_appearance_and_republished_tracks_share_one() {
        let job = job(
            vec![
                track("/r/b1.webm", "bob", TrackKind::Video, 3000, 1000),
                track("/r/a.webm", "alice", TrackKind::Video, 1000, 4000),
                track("/r/b2.webm", "bob", TrackKind::Video, 0, 1000),
                track("/r/late.webm", "carol", TrackKind::Video, 6000, 1000),
            ],
            vec![],
            5000,
            Path::new("/r/out.mp4"),
        );
        let plan = plan(&job);
        let tiles: Vec<&str> = plan.tiles.iter().map(|t| t.identity.as_str()).collect();
        assert_eq!(tiles, ["bob", "alice"], "carol starts after the end");
        let video: Vec<&str> = plan
            .video
            .iter()
            .map(|t| t.path.to_str().unwrap())
            .collect();
        assert_eq!(video, ["/r/b2.webm", "/r/a.webm", "/r/b1.webm"]);
        let graph = filter_graphs(&args_to(&job, &plan, &job.output))[0].to_string();
        // Both of bob's tracks on the left tile, alice's on the right.
        assert!(graph.contains("[0:v][t0p0]overlay=x=0:y=0"), "{graph}");
        assert!(graph.contains("[o0p0][t1p0]overlay=x=320:y=0"), "{graph}");
        assert!(graph.contains("[o1p0][t2p0]overlay=x=0:y=0"), "{graph}");
    }

    #[test]
    fn audio_only_and_video_only() {
        let out = Path::new("/r/out.mp4");
        let audio = job(
            vec![track("/r/m.webm", "a", TrackKind::Audio, 500, 1000)],
            vec![],
            2000,
            out,
        );
        let graphs = filter_graphs(&ffmpeg_args(&audio)).join("\n");
        assert!(
            graphs.starts_with("[0:v]format=yuv420p[vout]\n"),
            "{graphs}"
        );
        assert!(
            graphs.contains("adelay=500:all=1[a0];[a0]apad[aout]"),
            "{graphs}"
        );
        let video = job(
            vec![track("/r/v.webm", "a", TrackKind::Video, 0, 1000)],
            vec![],
            2000,
            out,
        );
        let args = ffmpeg_args(&video);
        let graphs = filter_graphs(&args);
        assert_eq!(graphs[1], "anullsrc=r=48000:cl=stereo[aout]");
        assert!(
            graphs[0].contains("scale=640:360:"),
            "one tile, the whole frame"
        );
    }

    #[test]
    fn speaker_layout() {
        let mut job = two_people(vec![
            span("alice", 0, 3000),
            span("bob", 2000, 5000),
            span("alice", 4000, 5000),
        ]);
        job.layout = Layout::Speaker;
        let plan = plan(&job);
        // 640x360: the large area 640x270, a strip of 90 below with a slot of 320 per person.
        // From 4 s both alice's second span and bob's cover the time: bob's comes first in `spans`.
        let big = r(0, 0, 640, 270);
        assert_eq!(
            plan.tiles,
            [
                Tile {
                    identity: "alice".into(),
                    placements: vec![
                        Placement {
                            rect: big,
                            when: Some(vec![(0, 3000)])
                        },
                        Placement {
                            rect: r(0, 270, 320, 90),
                            when: Some(vec![(4000, 5000)])
                        },
                    ],
                },
                Tile {
                    identity: "bob".into(),
                    placements: vec![
                        Placement {
                            rect: big,
                            when: Some(vec![(3000, 5000)])
                        },
                        Placement {
                            rect: r(320, 270, 320, 90),
                            when: Some(vec![(2000, 3000)])
                        },
                    ],
                },
            ]
        );
        let graph = filter_graphs(&args_to(&job, &plan, &job.output))[0].to_string();
        assert!(
            graph.contains("[2:v]setpts=PTS+2.000/TB,split=2[t1s0][t1s1]"),
            "{graph}"
        );
        assert!(
            graph.contains("overlay=x=320:y=270:eof_action=pass:enable='gte(t,2.000)*lt(t,3.000)'"),
            "{graph}"
        );
    }

    #[tokio::test]
    async fn nothing_to_compose() {
        let out = Path::new("/nonexistent/out.mp4");
        let late = job(
            vec![track("/r/v.webm", "a", TrackKind::Video, 3000, 1000)],
            vec![],
            2000,
            out,
        );
        let err = compose("ffmpeg", &late, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, CompositeError::NothingToCompose), "{err}");
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let job = two_people(vec![]);
        for program in ["convene-no-such-ffmpeg", "/nonexistent/bin/ffmpeg"] {
            let err = compose(
                program,
                &CompositeJob {
                    output: dir.path().join("o.mp4"),
                    ..job.clone()
                },
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
            assert!(
                matches!(&err, CompositeError::FfmpegMissing { program: p } if p == program),
                "{err:?}"
            );
            assert!(err.to_string().contains(program), "{err}");
        }
    }

    // With ffmpeg: inputs made by ffmpeg itself in a temporary directory.

    /// Whether ffmpeg and ffprobe are there; fails the test when they are not, unless
    /// CONVENE_SKIP_FFMPEG_TESTS=1.
    fn have_ffmpeg() -> bool {
        if find_program("ffmpeg").is_some() && find_program("ffprobe").is_some() {
            return true;
        }
        if std::env::var("CONVENE_SKIP_FFMPEG_TESTS").as_deref() == Ok("1") {
            eprintln!("skipped: no ffmpeg/ffprobe (CONVENE_SKIP_FFMPEG_TESTS=1)");
            return false;
        }
        panic!(
            "these tests run ffmpeg and ffprobe, not found in PATH: install ffmpeg \
             (apt-get install ffmpeg), or set CONVENE_SKIP_FFMPEG_TESTS=1 to skip them"
        );
    }

    /// Runs `program` with the words of `template`, each `{}` replaced by the next of `values`
    /// (whole: paths with spaces stay one argument).
    fn run(program: &str, template: &str, values: &[&str]) -> std::process::Output {
        let mut values = values.iter();
        let args: Vec<&str> = template
            .split_whitespace()
            .map(|w| {
                if w == "{}" {
                    values.next().expect("a value per {}")
                } else {
                    w
                }
            })
            .collect();
        let out = std::process::Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A VP8 WebM of `source` (a lavfi video source), `secs` long.
    fn video(dir: &Path, name: &str, source: &str, secs: u32) -> PathBuf {
        let path = dir.join(name);
        let t = secs.to_string();
        run(
            "ffmpeg",
            "-v error -y -f lavfi -i {} -t {} -c:v libvpx -b:v 300k -deadline realtime -cpu-used 8 \
             -threads 1 {}",
            &[source, &t, path.to_str().unwrap()],
        );
        path
    }

    /// An Opus WebM of a sine at `hz`, `secs` long.
    fn audio(dir: &Path, name: &str, hz: u32, secs: u32) -> PathBuf {
        let path = dir.join(name);
        let source = format!("sine=frequency={hz}:sample_rate=48000");
        let t = secs.to_string();
        run(
            "ffmpeg",
            "-v error -y -f lavfi -i {} -t {} -c:a libopus {}",
            &[&source, &t, path.to_str().unwrap()],
        );
        path
    }

    fn with_path(mut t: CompositeTrack, path: &Path) -> CompositeTrack {
        t.path = path.to_path_buf();
        t
    }

    /// (codec_type, codec_name) of each stream, and the container's duration in seconds.
    fn probe(path: &Path) -> (Vec<(String, String)>, f64) {
        let out = run(
            "ffprobe",
            "-v error -show_entries stream=codec_type,codec_name:format=duration -of default=nw=1 {}",
            &[path.to_str().unwrap()],
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (mut streams, mut name, mut duration) = (Vec::new(), String::new(), 0.0);
        for line in text.lines() {
            match line.split_once('=') {
                Some(("codec_name", v)) => name = v.to_string(),
                Some(("codec_type", v)) => streams.push((v.to_string(), std::mem::take(&mut name))),
                Some(("duration", v)) => duration = v.parse().unwrap(),
                _ => {}
            }
        }
        (streams, duration)
    }

    /// The luma plane of the frame at `at` seconds.
    fn luma(path: &Path, at: f64, width: u32, height: u32) -> Vec<u8> {
        let at = at.to_string();
        let out = run(
            "ffmpeg",
            "-v error -ss {} -i {} -frames:v 1 -f rawvideo -pix_fmt gray -",
            &[&at, path.to_str().unwrap()],
        );
        assert_eq!(out.stdout.len(), (width * height) as usize);
        out.stdout
    }

    /// The mean of a region (inset by 8 px, away from the tile's edges).
    fn mean(plane: &[u8], width: u32, rect: Rect) -> f64 {
        let (mut sum, mut n) = (0u64, 0u64);
        for y in rect.y + 8..rect.y + rect.h - 8 {
            for x in rect.x + 8..rect.x + rect.w - 8 {
                sum += u64::from(plane[(y * width + x) as usize]);
                n += 1;
            }
        }
        sum as f64 / n as f64
    }

    fn decodes_cleanly(path: &Path) {
        let out = run(
            "ffmpeg",
            "-v error -i {} -f null -",
            &[path.to_str().unwrap()],
        );
        let errors = String::from_utf8_lossy(&out.stderr);
        assert!(errors.trim().is_empty(), "decoding: {errors}");
    }

    /// The mean volume (dB) of the audio, or of `len` seconds of it from `from`.
    fn mean_volume(path: &Path, part: Option<(&str, &str)>) -> f64 {
        let (from, len) = part.unwrap_or(("0", "3600"));
        let out = run(
            "ffmpeg",
            "-hide_banner -nostats -ss {} -t {} -i {} -vn -af volumedetect -f null -",
            &[from, len, path.to_str().unwrap()],
        );
        let text = String::from_utf8_lossy(&out.stderr);
        let line = text
            .lines()
            .find(|l| l.contains("mean_volume:"))
            .expect("volumedetect output");
        let value = line.split("mean_volume:").nth(1).unwrap();
        value.trim().trim_end_matches("dB").trim().parse().unwrap()
    }

    const BLACK: f64 = 30.0;
    const LIT: f64 = 60.0;

    /// Two people: alice from the start (video 4 s, so ends early), bob from 2 s (3 s).
    fn two_people_files(dir: &Path) -> CompositeJob {
        let a = video(dir, "a.webm", "testsrc=size=320x240:rate=30", 4);
        let b = video(dir, "b.webm", "smptebars=size=320x240:rate=30", 3);
        let am = audio(dir, "a-mic.webm", 440, 4);
        let bm = audio(dir, "b-mic.webm", 880, 3);
        let mut job = two_people(vec![]);
        for (t, p) in job.tracks.iter_mut().zip([&a, &am, &b, &bm]) {
            *t = with_path(t.clone(), p);
        }
        job.output = dir.join("out/composite.mp4");
        job
    }

    #[tokio::test]
    async fn composes_two_people_starting_apart() {
        if !have_ffmpeg() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let job = two_people_files(dir.path());
        let made = started.elapsed();
        let composite = compose("ffmpeg", &job, Duration::from_secs(120))
            .await
            .unwrap();
        let composed = started.elapsed() - made;
        eprintln!("inputs made in {made:?}, composed in {composed:?}");

        assert_eq!(composite.path, job.output);
        assert!(composite.bytes > 10_000, "{composite:?}");
        assert_eq!(
            composite.bytes,
            std::fs::metadata(&job.output).unwrap().len()
        );
        assert!(!dir.path().join("out/composite.mp4.partial").exists());
        assert!(composite.duration_ms.abs_diff(5000) <= 300, "{composite:?}");
        let (streams, duration) = probe(&job.output);
        assert_eq!(
            streams,
            [
                ("video".to_string(), "h264".to_string()),
                ("audio".to_string(), "aac".to_string())
            ]
        );
        assert!((duration - 5.0).abs() <= 0.3, "duration {duration}");
        decodes_cleanly(&job.output);

        // Alice on the left from the start; bob on the right from 2 s only; alice gone after 4 s.
        let (left, right) = (r(0, 60, 320, 240), r(320, 60, 320, 240));
        let at1 = luma(&job.output, 1.0, 640, 360);
        let at3 = luma(&job.output, 3.0, 640, 360);
        let at45 = luma(&job.output, 4.5, 640, 360);
        assert!(
            mean(&at1, 640, left) > LIT,
            "alice at 1 s: {}",
            mean(&at1, 640, left)
        );
        assert!(
            mean(&at1, 640, right) < BLACK,
            "bob at 1 s: {}",
            mean(&at1, 640, right)
        );
        assert!(
            mean(&at3, 640, right) > LIT,
            "bob at 3 s: {}",
            mean(&at3, 640, right)
        );
        assert!(
            mean(&at3, 640, left) > LIT,
            "alice at 3 s: {}",
            mean(&at3, 640, left)
        );
        assert!(
            mean(&at45, 640, left) < BLACK,
            "alice at 4.5 s: {}",
            mean(&at45, 640, left)
        );
        assert!(
            mean(&at45, 640, right) > LIT,
            "bob at 4.5 s: {}",
            mean(&at45, 640, right)
        );
        let volume = mean_volume(&job.output, None);
        assert!(volume > -50.0, "mean volume {volume} dB");
        eprintln!("checked in {:?}", started.elapsed() - made - composed);
    }

    #[tokio::test]
    async fn shows_people_during_their_spans_only() {
        if !have_ffmpeg() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut job = two_people_files(dir.path());
        // Bob has frames from 2 s but is on screen from 3 s; alice until 1.5 s, then again at 2.5 s.
        job.spans = vec![
            span("alice", 0, 1500),
            span("bob", 3000, 5000),
            span("alice", 2500, 6000),
        ];
        compose("ffmpeg", &job, Duration::from_secs(120))
            .await
            .unwrap();
        let (left, right) = (r(0, 60, 320, 240), r(320, 60, 320, 240));
        let at = |t: f64| luma(&job.output, t, 640, 360);
        let (f1, f2, f35) = (at(1.0), at(2.0), at(3.5));
        assert!(mean(&f1, 640, left) > LIT);
        assert!(mean(&f2, 640, left) < BLACK, "alice off screen at 2 s");
        assert!(
            mean(&f2, 640, right) < BLACK,
            "bob not yet on screen at 2 s"
        );
        assert!(mean(&f35, 640, left) > LIT);
        assert!(mean(&f35, 640, right) > LIT);
        decodes_cleanly(&job.output);
    }

    #[tokio::test]
    async fn speaker_layout_puts_the_first_span_large() {
        if !have_ffmpeg() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut job = two_people_files(dir.path());
        job.layout = Layout::Speaker;
        job.spans = vec![span("alice", 0, 4000), span("bob", 2000, 5000)];
        compose("ffmpeg", &job, Duration::from_secs(120))
            .await
            .unwrap();
        // Large: 640x270 (alice's 4:3 as 360x270 in the middle); bob's slot: 320x90 at (320, 270),
        // his 4:3 as 120x90 in its middle.
        let (large, bob_small) = (r(140, 0, 360, 270), r(420, 270, 120, 90));
        let at = |t: f64| luma(&job.output, t, 640, 360);
        let (f1, f3, f45) = (at(1.0), at(3.0), at(4.5));
        assert!(mean(&f1, 640, large) > LIT);
        assert!(mean(&f1, 640, bob_small) < BLACK, "bob not there yet");
        assert!(mean(&f3, 640, bob_small) > LIT, "bob small");
        assert!(
            mean(&f45, 640, bob_small) < BLACK,
            "bob large, his slot empty"
        );
        assert!(mean(&f45, 640, large) > LIT, "bob large");
        decodes_cleanly(&job.output);
    }

    #[tokio::test]
    async fn composes_nine_tiles_without_audio() {
        if !have_ffmpeg() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let v = video(dir.path(), "v.webm", "testsrc2=size=160x120:rate=15", 2);
        // Every other one H.264 in Matroska.
        let h = dir.path().join("h.mkv");
        run(
            "ffmpeg",
            "-v error -f lavfi -i testsrc2=size=160x120:rate=15 -t 2 -c:v libx264 -preset ultrafast \
             -threads 1 {}",
            &[h.to_str().unwrap()],
        );
        let tracks = (0..9)
            .map(|i| {
                with_path(
                    track("", &format!("p{i}"), TrackKind::Video, 0, 2000),
                    if i % 2 == 0 { &v } else { &h },
                )
            })
            .collect();
        let job = job(tracks, vec![], 2000, &dir.path().join("nine.mp4"));
        let composite = compose("ffmpeg", &job, Duration::from_secs(120))
            .await
            .unwrap();
        assert!(composite.duration_ms.abs_diff(2000) <= 300, "{composite:?}");
        let (streams, _) = probe(&job.output);
        assert_eq!(streams.len(), 2, "silent audio for players: {streams:?}");
        let frame = luma(&job.output, 1.0, 640, 360);
        for (i, tile) in grid(9, 640, 360).into_iter().enumerate() {
            // 160x120 in a 212x120 tile: the picture's middle.
            let middle = r(tile.x + 26, tile.y, 160, 120);
            assert!(
                mean(&frame, 640, middle) > LIT,
                "tile {i} {tile:?}: {}",
                mean(&frame, 640, middle)
            );
        }
        decodes_cleanly(&job.output);
    }

    #[tokio::test]
    async fn composes_audio_only() {
        if !have_ffmpeg() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let m = audio(dir.path(), "m.webm", 440, 2);
        let job = job(
            vec![with_path(track("", "a", TrackKind::Audio, 1000, 2000), &m)],
            vec![],
            3000,
            &dir.path().join("audio.mp4"),
        );
        let composite = compose("ffmpeg", &job, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(composite.duration_ms.abs_diff(3000) <= 300, "{composite:?}");
        let (streams, duration) = probe(&job.output);
        assert_eq!(
            streams.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
            ["h264", "aac"]
        );
        assert!((duration - 3.0).abs() <= 0.3);
        assert!(mean_volume(&job.output, None) > -50.0);
        decodes_cleanly(&job.output);
    }

    #[tokio::test]
    async fn a_gap_in_audio_stays_in_its_place() {
        // A track silent in the middle (no packets from 1 s to 2 s, as with DTX or a mute): the
        // tone after the gap must stay at 2 s of the file, not move up to 1 s.
        if !have_ffmpeg() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let gap = dir.path().join("gap.webm");
        run(
            "ffmpeg",
            "-v error -f lavfi -i sine=frequency=440:sample_rate=48000 -t 3 \
             -af aselect='not(between(t,1,2))' -c:a libopus {}",
            &[gap.to_str().unwrap()],
        );
        let other = audio(dir.path(), "other.webm", 880, 1);
        let job = job(
            vec![
                with_path(track("", "a", TrackKind::Audio, 1000, 3000), &gap),
                with_path(track("", "b", TrackKind::Audio, 0, 1000), &other),
            ],
            vec![],
            4000,
            &dir.path().join("gap.mp4"),
        );
        compose("ffmpeg", &job, Duration::from_secs(60))
            .await
            .unwrap();
        let volume_at = |at| mean_volume(&job.output, Some((at, "0.5")));
        let volumes: Vec<f64> = ["0.25", "1.25", "2.25", "3.25"]
            .into_iter()
            .map(volume_at)
            .collect();
        assert!(volumes[0] > -50.0 && volumes[1] > -50.0, "{volumes:?}");
        assert!(volumes[2] < -60.0, "the gap, at 2-3 s: {volumes:?}");
        assert!(volumes[3] > -50.0, "{volumes:?}");
    }

    #[tokio::test]
    async fn follows_a_change_of_resolution_mid_file() {
        // What a recording that follows simulcast layers writes: 640x360 for 2 s, then 320x240.
        if !have_ffmpeg() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        video(dir.path(), "c1.webm", "testsrc2=size=640x360:rate=30", 2);
        video(dir.path(), "c2.webm", "testsrc2=size=320x240:rate=30", 2);
        std::fs::write(dir.path().join("list.txt"), "file c1.webm\nfile c2.webm\n").unwrap();
        let c = dir.path().join("c.webm");
        let list = dir.path().join("list.txt");
        run(
            "ffmpeg",
            "-v error -f concat -safe 0 -i {} -c copy {}",
            &[list.to_str().unwrap(), c.to_str().unwrap()],
        );
        let m = audio(dir.path(), "m.webm", 440, 4);
        let job = job(
            vec![
                with_path(track("", "a", TrackKind::Video, 500, 4000), &c),
                with_path(track("", "a", TrackKind::Audio, 500, 4000), &m),
            ],
            vec![],
            5000,
            &dir.path().join("c.mp4"),
        );
        compose("ffmpeg", &job, Duration::from_secs(60))
            .await
            .unwrap();
        // 16:9 fills the frame; 4:3 is pillarboxed (480x360 in the middle), not stretched.
        let before = luma(&job.output, 1.5, 640, 360);
        let after = luma(&job.output, 3.5, 640, 360);
        assert!(mean(&before, 640, r(0, 0, 80, 360)) > LIT);
        assert!(mean(&after, 640, r(0, 0, 80, 360)) < BLACK, "pillarbox");
        assert!(mean(&after, 640, r(80, 0, 480, 360)) > LIT);
        assert!(mean_volume(&job.output, None) > -50.0, "the audio goes on");
        decodes_cleanly(&job.output);
    }

    #[tokio::test]
    async fn many_spans() {
        // A person on screen for 1 ms at every odd millisecond (never at a frame: 25 fps is every
        // 40 ms) but from 1 s to 2 s: 6000 spans, more than ffmpeg parses as a sum, and a graph of
        // about 270 KB, more than Linux lets one argument be: it goes to ffmpeg in a file.
        if !have_ffmpeg() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let v = video(dir.path(), "v.webm", "testsrc2=size=320x240:rate=15", 3);
        let mut spans: Vec<Span> = (0..6000)
            .map(|k| span("a", 2 * k + 1, 2 * k + 2))
            .filter(|s| !(1000..2000).contains(&s.from_ms))
            .collect();
        spans.push(span("a", 1000, 2000));
        let job = job(
            vec![with_path(track("", "a", TrackKind::Video, 0, 3000), &v)],
            spans,
            12_000,
            &dir.path().join("long.mp4"),
        );
        assert!(filter_graphs(&ffmpeg_args(&job))[0].len() > 128 * 1024);
        let composite = compose("ffmpeg", &job, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            composite.duration_ms.abs_diff(12_000) <= 300,
            "{composite:?}"
        );
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains("graph")), "{names:?}");
        let middle = r(80, 0, 480, 360);
        let (f05, f15, f25) = (
            luma(&job.output, 0.5, 640, 360),
            luma(&job.output, 1.5, 640, 360),
            luma(&job.output, 2.5, 640, 360),
        );
        assert!(mean(&f05, 640, middle) < BLACK);
        assert!(mean(&f15, 640, middle) > LIT);
        assert!(mean(&f25, 640, middle) < BLACK);
    }

    #[tokio::test]
    async fn tracks_without_frames_are_left_out() {
        if !have_ffmpeg() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let v = video(dir.path(), "v.webm", "testsrc2=size=320x240:rate=15", 2);
        let m = audio(dir.path(), "m.webm", 440, 2);
        let header_only = dir.path().join("header-only.webm");
        run(
            "ffmpeg",
            "-v error -f lavfi -i testsrc -frames:v 0 -c:v libvpx {}",
            &[header_only.to_str().unwrap()],
        );
        let zero = dir.path().join("zero.webm");
        std::fs::write(&zero, b"").unwrap();
        let job = job(
            vec![
                with_path(track("", "a", TrackKind::Video, 0, 2000), &v),
                with_path(track("", "a", TrackKind::Audio, 0, 2000), &m),
                with_path(track("", "b", TrackKind::Video, 0, 2000), &header_only),
                with_path(track("", "b", TrackKind::Audio, 0, 2000), &zero),
                with_path(
                    track("", "c", TrackKind::Audio, 0, 2000),
                    &dir.path().join("gone.webm"),
                ),
            ],
            vec![],
            2000,
            &dir.path().join("out.mp4"),
        );
        compose("ffmpeg", &job, Duration::from_secs(60))
            .await
            .unwrap();
        // One tile (b's video is left out): a's 4:3 in the middle of the whole frame.
        let frame = luma(&job.output, 1.0, 640, 360);
        assert!(mean(&frame, 640, r(80, 0, 480, 360)) > LIT);
        assert!(mean_volume(&job.output, None) > -50.0);

        let nothing = CompositeJob {
            tracks: job.tracks[2..].to_vec(),
            ..job.clone()
        };
        let err = compose("ffmpeg", &nothing, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(matches!(err, CompositeError::NothingToCompose), "{err:?}");
    }

    /// An executable script in `dir`.
    #[cfg(unix)]
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_failure_keeps_the_end_of_stderr_and_no_partial_file() {
        // A stand-in ffmpeg (and the ffprobe next to it, which finds frames in anything).
        let bin = tempfile::tempdir().unwrap();
        let ffmpeg = script(
            bin.path(),
            "ffmpeg",
            "for arg in \"$@\"; do out=\"$arg\"; done\n\
             echo partial > \"${out#file:}\"\n\
             i=0; while [ $i -lt 300 ]; do echo \"noise $i\" >&2; i=$((i+1)); done\n\
             echo 'the reason: Invalid data found' >&2\n\
             exit 3",
        );
        script(bin.path(), "ffprobe", "echo 0");
        let dir = tempfile::tempdir().unwrap();
        let job = job(
            vec![track("/r/a.webm", "a", TrackKind::Video, 0, 1000)],
            vec![],
            1000,
            &dir.path().join("x.mp4"),
        );
        let err = compose(ffmpeg.to_str().unwrap(), &job, Duration::from_secs(60))
            .await
            .unwrap_err();
        let CompositeError::Failed {
            status,
            stderr_tail,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert!(status.contains('3'), "{status}");
        assert!(
            stderr_tail.ends_with("the reason: Invalid data found"),
            "{stderr_tail}"
        );
        assert!(!stderr_tail.contains("noise 1\n"), "only the tail is kept");
        assert!(stderr_tail.len() <= STDERR_TAIL);
        assert!(err.to_string().contains("the reason"));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no partial file left"
        );
    }

    #[tokio::test]
    async fn a_slow_run_is_killed() {
        if !have_ffmpeg() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let v = video(dir.path(), "v.webm", "testsrc2=size=160x120:rate=15", 1);
        // An hour of output cannot be made in 300 ms.
        let job = job(
            vec![with_path(track("", "a", TrackKind::Video, 0, 1000), &v)],
            vec![],
            3_600_000,
            &dir.path().join("slow.mp4"),
        );
        let started = Instant::now();
        let err = compose("ffmpeg", &job, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, CompositeError::TimedOut), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!dir.path().join("slow.mp4").exists());
        assert!(!dir.path().join("slow.mp4.partial").exists());
    }
}
