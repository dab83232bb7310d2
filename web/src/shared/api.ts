// convene's native API as the pages use it: typed wire shapes and one fetch wrapper whose
// failures carry the server's `{"error": {"code", "message"}}`.

export type Role = 'host' | 'speaker' | 'viewer';
export type ParticipantState = 'waiting' | 'admitted' | 'joined' | 'left' | 'removed' | 'banned';
export type Policy = 'open' | 'wait_for_host' | 'ask_host' | 'deny';
export type Mode = 'meeting' | 'stream';
export type Status = 'created' | 'live' | 'ended';

export interface MeetingPublic {
  meeting_id: string;
  room_name: string;
  name: string;
  mode: Mode;
  status: Status;
  policy: Policy;
  quality: string;
  logout_url: string | null;
  waiting_room_chat: boolean;
  /** Being recorded now (everyone in the meeting is told). */
  recording?: boolean;
}

export interface Participant {
  identity: string;
  name: string;
  role: Role;
  state: ParticipantState;
  hand_raised: boolean;
  invited: boolean;
  media_connected: boolean;
  banned_until: string | null;
  created_at: string;
  updated_at: string;
}

export interface EnterResponse {
  identity: string;
  role: Role;
  state: ParticipantState;
  token: string;
  events_url: string;
  meeting: MeetingPublic;
}

export interface JoinResponse {
  access_token: string;
  api_token: string;
  url: string;
  room_name: string;
  identity: string;
  role: Role;
  events_url: string;
  meeting: MeetingPublic;
}

export interface JoinLinkResponse extends EnterResponse {
  join: JoinResponse | null;
}

export interface MeView {
  participant: Participant;
  meeting: MeetingPublic;
  position?: number;
}

export interface EventView {
  seq: number;
  at: string;
  instance_id: string;
  type: string;
  data: Record<string, unknown>;
}

export interface EventPage {
  events: EventView[];
  next_after: number;
  last_seq: number;
}

export interface Credentials {
  host: string;
  participant: string;
  viewer: string;
}

export interface MeetingView {
  meeting_id: string;
  room_name: string;
  name: string;
  mode: Mode;
  policy: Policy;
  status: Status;
  capacity: number | null;
  quality: string;
  logout_url: string | null;
  webhook_url: string | null;
  metadata: Record<string, unknown>;
  schedule: { starts_at: string; ends_at: string | null } | null;
  credentials: Credentials;
  run: { instance_id: string; number: number; opened_at: string; live_at: string | null; ended_at: string | null };
  created_at: string;
  updated_at: string;
  last_seq: number;
  waiting_room_chat: boolean;
  /** Record the meeting whenever it goes live. */
  auto_record?: boolean;
  /** The recording running now, if any. */
  recording_id?: string | null;
  people?: { waiting: number; admitted: number; joined: number };
}

export type RecordingState = 'recording' | 'processing' | 'ready' | 'failed';

export interface RecordingFile {
  name: string;
  kind: 'audio' | 'video' | 'composite';
  identity: string | null;
  track_sid: string | null;
  codec: string;
  bytes: number;
  start_ms: number;
  duration_ms: number;
  /** Where to download it (the meeting's hosts and admins). */
  url: string;
}

export interface RecordingView {
  recording_id: string;
  meeting_id: string;
  state: RecordingState;
  started_at: string;
  started_by: string | null;
  stopped_at: string | null;
  stop_reason: string | null;
  duration_ms: number;
  bytes: number;
  error: string | null;
  files: RecordingFile[];
}

export interface WebhookDelivery {
  meeting_id: string;
  seq: number;
  event_type: string;
  url: string;
  scope: string;
  status: 'pending' | 'delivered' | 'failed';
  attempts: number;
  next_attempt_at: string | null;
  last_status: number | null;
  last_error: string | null;
  created_at: string;
  updated_at: string;
}

/** A failed call: the server's error code and message, or `network` when it was not reached. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** How a call authenticates: a participant's bearer token, or an admin's key pair (Basic). */
export type Auth = { token: string } | { key: string; secret: string } | null;

export function authHeader(auth: Auth): string | undefined {
  if (!auth) return undefined;
  if ('token' in auth) return `Bearer ${auth.token}`;
  const bytes = new TextEncoder().encode(`${auth.key}:${auth.secret}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

export async function api<T>(method: string, path: string, auth: Auth = null, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  const authorization = authHeader(auth);
  if (authorization) headers.authorization = authorization;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'network', e instanceof Error ? e.message : String(e));
  }
  const text = await response.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data as { error?: { code?: string; message?: string } } | null)?.error;
    throw new ApiError(response.status, error?.code ?? `http_${response.status}`, error?.message ?? (text || response.statusText));
  }
  return data as T;
}

export const meetingPath = (meetingId: string, suffix = '') => `/v1/meetings/${encodeURIComponent(meetingId)}${suffix}`;

/** The seconds-since-epoch expiry of a JWT, read without verifying (the server verifies). */
export function tokenExpiry(token: string): number | null {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(payload)) as { exp?: number };
    return typeof claims.exp === 'number' ? claims.exp : null;
  } catch {
    return null;
  }
}
