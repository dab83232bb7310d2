// convene's event stream for a page: the meeting's events over a WebSocket
// (`GET /v1/meetings/{id}/events`, `?access_token=`), starting with a snapshot, resumed with
// `?after=<last seq>` after any drop so no event is missed or seen twice. The admin console,
// which must not put its key in a URL, reads the same stream as Server-Sent Events over fetch.

import { type Auth, type EventView, type MeetingPublic, type Participant, authHeader, meetingPath } from './api';

export interface Snapshot {
  type: 'snapshot';
  seq: number;
  data: { meeting: MeetingPublic; you: Participant | null; participants: Participant[] | null };
}

export type Frame = EventView | Snapshot;

export function isSnapshot(frame: Frame): frame is Snapshot {
  return frame.type === 'snapshot';
}

export type StreamStatus = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** Why a stream ended for good: the token no longer stands or has expired. */
export type StreamEnd = 'revoked' | 'expired' | 'new_run';

export interface StreamHandlers {
  onFrame(frame: Frame): void;
  onStatus(status: StreamStatus): void;
  onEnd(end: StreamEnd): void;
  /** Called after a failed (re)connection: a rejection (ban, revoked token) ends the stream. */
  probe(): Promise<boolean>;
}

const BACKOFF_MS = [250, 500, 1000, 2000, 4000];

export class EventStream {
  private socket: WebSocket | null = null;
  private lastSeq: number | null = null;
  private attempt = 0;
  private stopped = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private opened = false;

  constructor(
    private readonly meetingId: string,
    private token: string,
    private readonly handlers: StreamHandlers,
  ) {}

  get seq(): number | null {
    return this.lastSeq;
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  /** Continues with another token (e.g. the access token after joining) from the last event. */
  switchToken(token: string): void {
    this.token = token;
    if (this.stopped) return;
    this.detach();
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.detach();
    this.handlers.onStatus('closed');
  }

  private detach(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      socket.close(1000);
    }
  }

  private url(): string {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const params = new URLSearchParams({ access_token: this.token });
    if (this.lastSeq !== null) params.set('after', String(this.lastSeq));
    return `${scheme}://${location.host}${meetingPath(this.meetingId, '/events')}?${params}`;
  }

  private connect(): void {
    this.handlers.onStatus(this.attempt === 0 && this.lastSeq === null ? 'connecting' : 'reconnecting');
    this.opened = false;
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.onopen = () => {
      this.opened = true;
      this.attempt = 0;
      this.handlers.onStatus('open');
    };
    socket.onmessage = (message) => {
      let frame: Frame;
      try {
        frame = JSON.parse(String(message.data)) as Frame;
      } catch {
        return;
      }
      if (typeof frame.seq === 'number') {
        if (!isSnapshot(frame) && this.lastSeq !== null && frame.seq <= this.lastSeq) return;
        this.lastSeq = Math.max(this.lastSeq ?? 0, frame.seq);
      }
      this.handlers.onFrame(frame);
    };
    socket.onclose = (close) => {
      this.socket = null;
      if (this.stopped) return;
      if (close.code === 1008) {
        const end: StreamEnd = close.reason.includes('expired') ? 'expired' : close.reason.includes('run') ? 'new_run' : 'revoked';
        this.stopped = true;
        this.handlers.onStatus('closed');
        this.handlers.onEnd(end);
        return;
      }
      this.retry(!this.opened);
    };
  }

  private retry(failedToOpen: boolean): void {
    this.handlers.onStatus('reconnecting');
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.timer = setTimeout(async () => {
      this.timer = null;
      if (this.stopped) return;
      // A refused upgrade looks like a network failure to a page: ask the API why.
      if (failedToOpen && !(await this.handlers.probe().catch(() => true))) {
        this.stopped = true;
        this.handlers.onStatus('closed');
        return;
      }
      if (!this.stopped) this.connect();
    }, delay);
  }
}

/**
 * The same stream as Server-Sent Events read with fetch, so it can carry an `Authorization`
 * header (the admin's key pair never goes into a URL). Resumes with `Last-Event-ID`.
 */
export class SseStream {
  private controller: AbortController | null = null;
  private lastSeq: number | null = null;
  private stopped = false;

  constructor(
    private readonly meetingId: string,
    private readonly auth: Auth,
    private readonly onFrame: (frame: Frame) => void,
    private readonly onStatus: (status: StreamStatus) => void,
  ) {}

  start(): void {
    this.stopped = false;
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.controller?.abort();
    this.onStatus('closed');
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      this.onStatus(attempt === 0 ? 'connecting' : 'reconnecting');
      this.controller = new AbortController();
      const headers: Record<string, string> = { accept: 'text/event-stream' };
      const authorization = authHeader(this.auth);
      if (authorization) headers.authorization = authorization;
      if (this.lastSeq !== null) headers['last-event-id'] = String(this.lastSeq);
      try {
        const response = await fetch(meetingPath(this.meetingId, '/events'), { headers, signal: this.controller.signal });
        if (response.status === 401 || response.status === 403 || response.status === 404) {
          this.onStatus('closed');
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        this.onStatus('open');
        attempt = 0;
        await this.read(response.body);
      } catch {
        if (this.stopped) return;
      }
      attempt += 1;
      await new Promise((resolve) => setTimeout(resolve, BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]));
    }
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = 'message';
        const data: string[] = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (event === 'close' || data.length === 0) continue;
        try {
          const frame = JSON.parse(data.join('\n')) as Frame;
          if (!isSnapshot(frame) && this.lastSeq !== null && frame.seq <= this.lastSeq) continue;
          this.lastSeq = Math.max(this.lastSeq ?? 0, frame.seq);
          this.onFrame(frame);
        } catch {
          // A frame that is not JSON is not ours to show.
        }
      }
    }
  }
}
