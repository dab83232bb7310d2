// One person's session in a meeting, outside React: entering (PIN, one-time link or a token
// handed over by an app), the waiting room, joining, and the meeting as convene's event stream
// tells it (roster, roles, hands, invitations, chat). Pages read it with `useSession` and call its
// actions; every action calls the native API and a refusal becomes `error` with the server's
// message.

import {
  type EnterResponse,
  type EventPage,
  type EventView,
  type JoinLinkResponse,
  type JoinResponse,
  type MeView,
  type MeetingPublic,
  type Participant,
  type Policy,
  type RecordingView,
  type Role,
  ApiError,
  api,
  meetingPath,
  tokenExpiry,
} from '../shared/api';
import { EventStream, type Frame, type StreamEnd, type StreamStatus, isSnapshot } from '../shared/events';
import { applyEvent } from '../shared/roster';
import { t } from '../shared/strings';

export type Phase = 'prejoin' | 'entering' | 'waiting' | 'joining' | 'live' | 'ended';

export type EndKind = 'left' | 'ended' | 'denied' | 'removed' | 'banned' | 'expired' | 'new_run';

export interface ChatLine {
  seq: number;
  at: string;
  from: string;
  to: string | null;
  text: string;
  waitingRoom: boolean;
}

export interface Problem {
  code: string;
  message: string;
}

export interface SessionState {
  phase: Phase;
  end: { kind: EndKind; detail?: string } | null;
  meetingId: string;
  identity: string;
  role: Role | null;
  meeting: MeetingPublic | null;
  people: Record<string, Participant>;
  /** Raised hands, oldest first. */
  hands: string[];
  chat: ChatLine[];
  position: number | null;
  invited: boolean;
  stream: StreamStatus;
  /** Where to connect for media, once joined. */
  media: { url: string; token: string } | null;
  error: Problem | null;
  notice: string | null;
  /** The last time a host muted one of this person's tracks (`audio` / `video`). */
  mutedByHost: { track: string; at: number } | null;
  sentBack: boolean;
  /** The meeting is being recorded now: seeded from the meeting as the person enters, then
   *  kept by the event stream (its snapshot, `recording.started` and `recording.stopped`). */
  recording: boolean;
  /** The running recording, when known (a host stops it by its ID). */
  recordingId: string | null;
}

const initial: SessionState = {
  phase: 'prejoin',
  end: null,
  meetingId: '',
  identity: '',
  role: null,
  meeting: null,
  people: {},
  hands: [],
  chat: [],
  position: null,
  invited: false,
  stream: 'closed',
  media: null,
  error: null,
  notice: null,
  mutedByHost: null,
  sentBack: false,
  recording: false,
  recordingId: null,
};

/** How often a guest in a one-by-one queue re-reads its place (others' admissions are not its events). */
const POSITION_REFRESH_MS = 10_000;
/** Tokens are renewed this long before they expire. */
const RENEW_BEFORE_S = 300;

function problem(e: unknown): Problem {
  if (e instanceof ApiError) return { code: e.code, message: e.code === 'network' ? t.errors.network : e.message };
  const known = e as Partial<Problem> | null;
  if (known && typeof known.code === 'string' && typeof known.message === 'string') return { code: known.code, message: known.message };
  return { code: 'error', message: e instanceof Error ? e.message : String(e) };
}

export class Session {
  private state: SessionState = initial;
  private listeners = new Set<() => void>();
  private waitingToken = '';
  private apiToken = '';
  /** The credential the person entered with, to come back after being sent back. */
  private credential: string | null = null;
  private name = '';
  private stream: EventStream | null = null;
  private positionTimer: ReturnType<typeof setInterval> | null = null;
  private renewTimer: ReturnType<typeof setTimeout> | null = null;
  private joining = false;

  get snapshot(): SessionState {
    return this.state;
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getState = (): SessionState => this.state;

  private set(patch: Partial<SessionState>): void {
    this.state = { ...this.state, ...patch };
    for (const listener of this.listeners) listener();
  }

  private get token(): string {
    return this.apiToken || this.waitingToken;
  }

  clearError(): void {
    this.set({ error: null });
  }

  clearNotice(): void {
    this.set({ notice: null });
  }

  fail(e: unknown): void {
    this.set({ error: problem(e) });
  }

  say(notice: string): void {
    this.set({ notice });
  }

  /** The server refused media access again (after a drop): the session is over, say why. */
  refused(e: ApiError): void {
    if (e.code === 'banned') this.finish('banned');
    else if (e.code === 'meeting_ended' || e.code === 'meeting_not_live') this.finish('ended');
    else this.finish('removed', e.message);
  }

  // ----- getting in -----------------------------------------------------------------------------

  async enter(meetingId: string, credential: string, name: string): Promise<void> {
    this.set({ phase: 'entering', error: null, end: null, meetingId });
    try {
      // The same person comes back as the same identity (roles and bans follow it).
      const known = rememberedIdentity(meetingId);
      let entered: EnterResponse;
      try {
        entered = await api<EnterResponse>('POST', meetingPath(meetingId, '/enter'), null, { credential, name, ...(known ? { identity: known } : {}) });
      } catch (e) {
        // Another role's identity on this browser (a host's, say): enter as a new person.
        if (!(known && e instanceof ApiError && e.code === 'forbidden')) throw e;
        entered = await api<EnterResponse>('POST', meetingPath(meetingId, '/enter'), null, { credential, name });
      }
      remember(meetingId, entered.identity);
      this.credential = credential;
      this.name = name;
      await this.entered(entered);
    } catch (e) {
      this.set({ phase: 'prejoin', error: problem(e) });
    }
  }

  /** A one-time join link (the BigBlueButton surface's redirect). */
  async enterWithLink(link: string): Promise<void> {
    this.set({ phase: 'entering', error: null });
    try {
      const entered = await api<JoinLinkResponse>('POST', '/v1/join-links/exchange', null, { join_link: link });
      this.set({ meetingId: entered.meeting.meeting_id });
      await this.entered(entered, entered.join);
    } catch (e) {
      this.set({ phase: 'prejoin', error: problem(e) });
    }
  }

  /** A convene token an app handed over (e.g. from the live-stream surface): join with it. */
  async enterWithToken(meetingId: string, token: string): Promise<void> {
    this.set({ phase: 'entering', error: null, meetingId });
    this.waitingToken = token;
    try {
      const me = await api<MeView>('GET', meetingPath(meetingId, '/me'), { token });
      this.set({ identity: me.participant.identity, role: me.participant.role, meeting: me.meeting, recording: Boolean(me.meeting.recording) });
      this.openStream(token);
      if (me.participant.state === 'waiting') this.wait(me.position ?? null);
      else await this.join();
    } catch (e) {
      this.set({ phase: 'prejoin', error: problem(e) });
    }
  }

  private async entered(entered: EnterResponse, join?: JoinResponse | null): Promise<void> {
    this.waitingToken = entered.token;
    this.apiToken = '';
    this.set({ identity: entered.identity, role: entered.role, meeting: entered.meeting, sentBack: false, recording: Boolean(entered.meeting.recording) });
    this.openStream(entered.token);
    if (join) this.joined(join);
    else if (entered.state === 'waiting') this.wait(null);
    else await this.join();
  }

  private wait(position: number | null): void {
    this.set({ phase: 'waiting', position });
    void this.refreshPosition();
    this.stopPositionTimer();
    this.positionTimer = setInterval(() => void this.refreshPosition(), POSITION_REFRESH_MS);
  }

  private stopPositionTimer(): void {
    if (this.positionTimer) clearInterval(this.positionTimer);
    this.positionTimer = null;
  }

  private async refreshPosition(): Promise<void> {
    if (this.state.phase !== 'waiting') return;
    const policy = this.state.meeting?.policy;
    if (policy !== 'ask_host' && policy !== 'deny' && this.state.position === null) return;
    try {
      const me = await api<MeView>('GET', meetingPath(this.state.meetingId, '/me'), { token: this.token });
      this.set({ position: me.position ?? null, meeting: me.meeting });
      if (me.participant.state === 'admitted' || me.participant.state === 'joined') void this.join();
    } catch {
      // The event stream reports what matters (a denial ends it); a missed refresh is harmless.
    }
  }

  /** Exchanges the waiting-room token for media access once admitted. */
  async join(): Promise<void> {
    if (this.joining) return;
    this.joining = true;
    this.set({ phase: 'joining', error: null });
    try {
      const joined = await api<JoinResponse>('POST', meetingPath(this.state.meetingId, '/join'), { token: this.token });
      this.joined(joined);
    } catch (e) {
      if (e instanceof ApiError && (e.code === 'meeting_not_live' || e.code === 'not_admitted')) {
        this.wait(this.state.position);
      } else {
        this.set({ phase: 'prejoin', error: problem(e) });
        this.closeStream();
      }
    } finally {
      this.joining = false;
    }
  }

  private joined(joined: JoinResponse): void {
    this.stopPositionTimer();
    this.apiToken = joined.api_token || joined.access_token;
    this.set({
      phase: 'live',
      role: joined.role,
      meeting: joined.meeting,
      media: { url: joined.url, token: joined.access_token },
      position: null,
      sentBack: false,
    });
    this.stream?.switchToken(this.apiToken);
    this.scheduleRenewal();
  }

  /** Fresh tokens before these expire (the media connection keeps its own). */
  private scheduleRenewal(): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    const exp = tokenExpiry(this.apiToken);
    if (!exp) return;
    const inMs = Math.max(10_000, (exp - RENEW_BEFORE_S) * 1000 - Date.now());
    this.renewTimer = setTimeout(async () => {
      try {
        const joined = await api<JoinResponse>('POST', meetingPath(this.state.meetingId, '/join'), { token: this.apiToken });
        this.apiToken = joined.api_token || joined.access_token;
        this.set({ media: { url: joined.url, token: joined.access_token } });
        this.stream?.switchToken(this.apiToken);
        this.scheduleRenewal();
      } catch {
        // The stream ends with `expired` and the page says so.
      }
    }, inMs);
  }

  /** Media access again, after the media connection was lost for good. */
  async rejoin(): Promise<JoinResponse> {
    const joined = await api<JoinResponse>('POST', meetingPath(this.state.meetingId, '/join'), { token: this.token });
    this.apiToken = joined.api_token || joined.access_token;
    this.set({ media: { url: joined.url, token: joined.access_token }, role: joined.role });
    return joined;
  }

  async leave(): Promise<void> {
    const token = this.token;
    const meetingId = this.state.meetingId;
    this.finish('left');
    if (token) await api('POST', meetingPath(meetingId, '/leave'), { token }).catch(() => undefined);
  }

  /** Ends the session on this page; someone who left or whose meeting ended goes to the
   *  meeting's logout URL when it has one (the BigBlueButton surface's `redirect_at_logout`). */
  finish(kind: EndKind, detail?: string): void {
    this.closeStream();
    this.stopPositionTimer();
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.set({ phase: 'ended', end: { kind, detail }, media: null, invited: false });
    const logout = this.state.meeting?.logout_url;
    if ((kind === 'left' || kind === 'ended') && logout && /^https?:\/\//i.test(logout)) location.assign(logout);
  }

  /** Back to the form (e.g. "join again"). */
  reset(): void {
    this.closeStream();
    this.waitingToken = this.apiToken = '';
    this.set({ ...initial, meetingId: this.state.meetingId });
  }

  // ----- the event stream -----------------------------------------------------------------------

  private openStream(token: string): void {
    this.closeStream();
    this.set({ people: {}, hands: [], chat: [], invited: false });
    const stream = new EventStream(this.state.meetingId, token, {
      onFrame: (frame) => this.onFrame(frame),
      onStatus: (status) => this.set({ stream: status }),
      onEnd: (end) => this.onStreamEnd(end),
      probe: () => this.probe(),
    });
    this.stream = stream;
    stream.start();
  }

  private closeStream(): void {
    this.stream?.stop();
    this.stream = null;
  }

  /** After a refused reconnection: whether the token still stands (else the session ends). */
  private async probe(): Promise<boolean> {
    try {
      await api<MeView>('GET', meetingPath(this.state.meetingId, '/me'), { token: this.token });
      return true;
    } catch (e) {
      if (!(e instanceof ApiError) || e.status === 0 || e.status >= 500) return true;
      if (e.code === 'banned') this.finish('banned');
      else if (this.state.phase === 'live' || this.state.phase === 'waiting' || this.state.phase === 'joining') this.finish('removed', e.message);
      return false;
    }
  }

  private onStreamEnd(end: StreamEnd): void {
    if (this.state.phase === 'ended') return;
    if (end === 'expired') this.finish('expired');
    else if (end === 'new_run') this.finish('new_run');
    // `revoked`: the event that revoked the token (denied, removed, banned, sent back) came first
    // and was handled; otherwise say what the API says.
    else void this.probe();
  }

  private onFrame(frame: Frame): void {
    if (isSnapshot(frame)) {
      const { meeting, you, participants } = frame.data;
      const people: Record<string, Participant> = {};
      for (const p of participants ?? []) people[p.identity] = p;
      if (you) people[you.identity] = you;
      const hands = Object.values(people)
        .filter((p) => p.hand_raised)
        .sort((a, b) => a.updated_at.localeCompare(b.updated_at))
        .map((p) => p.identity);
      const recording = Boolean(meeting?.recording);
      this.set({ meeting, people, hands, invited: you?.invited ?? false, role: you?.role ?? this.state.role, recording, recordingId: recording ? this.state.recordingId : null });
      void this.loadHistory(frame.seq);
      if (you && (you.state === 'admitted' || you.state === 'joined') && this.state.phase === 'waiting') void this.join();
      return;
    }
    this.apply(frame);
  }

  /** Chat before the snapshot (a late joiner reads the history) and the order of raised hands. */
  private async loadHistory(upTo: number): Promise<void> {
    const events: EventView[] = [];
    let after = 0;
    try {
      while (after < upTo) {
        const page = await api<EventPage>('GET', `${meetingPath(this.state.meetingId, '/events')}?after=${after}&limit=1000`, { token: this.token });
        events.push(...page.events.filter((e) => e.seq <= upTo));
        if (page.next_after <= after) break;
        after = page.next_after;
      }
    } catch {
      return;
    }
    const run = events.length ? events[events.length - 1].instance_id : null;
    const history = events.filter((e) => e.instance_id === run);
    const chat = history.filter((e) => e.type === 'chat.message').map(chatLine);
    const order: string[] = [];
    for (const e of history) {
      const who = e.data.identity as string;
      if (e.type === 'stage.hand_raised') order.push(who);
      else if (e.type === 'stage.hand_lowered') order.splice(order.indexOf(who) >>> 0, 1);
    }
    const raised = new Set(this.state.hands);
    const hands = [...order.filter((who) => raised.has(who)), ...this.state.hands.filter((who) => !order.includes(who))];
    const known = new Set(this.state.chat.map((c) => c.seq));
    this.set({ chat: [...chat.filter((c) => !known.has(c.seq)), ...this.state.chat].sort((a, b) => a.seq - b.seq), hands: [...new Set(hands)] });
  }


  private apply(e: EventView): void {
    const d = e.data as Record<string, unknown>;
    const who = d.identity as string;
    const mine = who !== undefined && who === this.state.identity;
    const people = applyEvent(this.state.people, e);
    const withoutHand = () => this.state.hands.filter((h) => h !== who);
    switch (e.type) {
      case 'meeting.started':
        this.set({ people, meeting: this.state.meeting && { ...this.state.meeting, status: 'live' } });
        return;
      case 'meeting.ended':
        this.set({ people, meeting: this.state.meeting && { ...this.state.meeting, status: 'ended' } });
        if (this.state.phase !== 'prejoin') this.finish('ended');
        return;
      case 'meeting.updated':
        this.set({ people, meeting: this.state.meeting && { ...this.state.meeting, name: d.name as string, policy: d.policy as Policy } });
        void this.refreshPosition();
        return;
      case 'stage.hand_raised':
        this.set({ people, hands: [...withoutHand(), who] });
        return;
      case 'stage.hand_lowered':
      case 'participant.left':
      case 'participant.removed':
      case 'participant.banned':
      case 'participant.sent_back':
        this.set({ people, hands: withoutHand() });
        break;
      case 'participant.role_changed':
        this.set({ people, hands: d.role !== 'viewer' ? withoutHand() : this.state.hands });
        if (mine) this.set({ role: d.role as Role, invited: false });
        return;
      case 'participant.joined':
        this.set({ people });
        if (mine) this.set({ role: d.role as Role });
        return;
      case 'stage.invited':
      case 'stage.invite_accepted':
      case 'stage.invite_declined':
        this.set({ people });
        if (mine) this.set({ invited: e.type === 'stage.invited' });
        return;
      case 'participant.muted':
        if (mine && d.muted) this.set({ mutedByHost: { track: String(d.track), at: Date.now() } });
        return;
      case 'chat.message':
        if (!this.state.chat.some((c) => c.seq === e.seq)) this.set({ chat: [...this.state.chat, chatLine(e)] });
        return;
      case 'recording.started':
        this.set({ recording: true, recordingId: String(d.recording_id), meeting: this.state.meeting && { ...this.state.meeting, recording: true } });
        return;
      case 'recording.stopped':
        if (this.state.recordingId === null || this.state.recordingId === String(d.recording_id)) {
          this.set({ recording: false, recordingId: null, meeting: this.state.meeting && { ...this.state.meeting, recording: false } });
        }
        return;
      default:
        if (people !== this.state.people) this.set({ people });
    }
    if (!mine) return;
    switch (e.type) {
      case 'participant.admitted':
      case 'participants.admitted':
        void this.join();
        break;
      case 'participant.denied':
        this.finish('denied');
        break;
      case 'participant.sent_back':
        void this.sentBack();
        break;
      case 'participant.removed':
        this.finish('removed');
        break;
      case 'participant.banned':
        this.finish('banned');
        break;
    }
  }

  /** Sent back to the waiting room: the old token is revoked; come back in with the credential. */
  private async sentBack(): Promise<void> {
    this.closeStream();
    this.set({ phase: 'waiting', media: null, sentBack: true, position: null });
    if (!this.credential) {
      this.finish('removed', undefined);
      return;
    }
    try {
      const entered = await api<EnterResponse>('POST', meetingPath(this.state.meetingId, '/enter'), null, {
        credential: this.credential,
        name: this.name,
        identity: this.state.identity,
      });
      this.waitingToken = entered.token;
      this.apiToken = '';
      this.openStream(entered.token);
      if (entered.state === 'waiting') this.wait(null);
      else await this.join();
      this.set({ sentBack: true });
    } catch (e) {
      if (e instanceof ApiError && e.code === 'banned') this.finish('banned');
      else this.finish('removed', problem(e).message);
    }
  }

  // ----- actions --------------------------------------------------------------------------------

  private async call(method: string, suffix: string, body?: unknown): Promise<boolean> {
    try {
      await api(method, meetingPath(this.state.meetingId, suffix), { token: this.token }, body);
      return true;
    } catch (e) {
      this.set({ error: problem(e) });
      return false;
    }
  }

  sendChat(text: string, to: string | null): Promise<boolean> {
    return this.call('POST', '/chat', to ? { text, to } : { text });
  }

  raiseHand(raised: boolean): Promise<boolean> {
    return this.call('POST', '/hand', { raised });
  }

  answerInvitation(accept: boolean): Promise<boolean> {
    return this.call('POST', accept ? '/invitation/accept' : '/invitation/decline');
  }

  private target(identity: string, action: string, body?: unknown): Promise<boolean> {
    return this.call('POST', `/participants/${encodeURIComponent(identity)}/${action}`, body);
  }

  admit = (identity: string) => this.target(identity, 'admit');
  deny = (identity: string) => this.target(identity, 'deny');
  sendBack = (identity: string) => this.target(identity, 'send-back');
  invite = (identity: string) => this.target(identity, 'invite');
  remove = (identity: string) => this.target(identity, 'remove');
  ban = (identity: string, seconds: number | null) => this.target(identity, 'ban', seconds ? { duration_seconds: seconds } : {});
  setRole = (identity: string, role: Role) => this.target(identity, 'role', { role });
  mute = (identity: string, track: 'audio' | 'video') => this.target(identity, 'mute', { track, muted: true });
  admitAll = () => this.call('POST', '/admit-all');

  /** A host starts recording the meeting (everyone is told by `recording.started`). */
  async startRecording(): Promise<boolean> {
    try {
      const recording = await api<RecordingView>('POST', meetingPath(this.state.meetingId, '/recordings'), { token: this.token });
      this.set({ recording: true, recordingId: recording.recording_id });
      return true;
    } catch (e) {
      this.set({ error: problem(e) });
      return false;
    }
  }

  /** A host stops the running recording: by its ID from the events, or the one the list says runs. */
  async stopRecording(): Promise<boolean> {
    try {
      let id = this.state.recordingId;
      if (!id) {
        const list = await api<{ recordings: RecordingView[] }>('GET', meetingPath(this.state.meetingId, '/recordings'), { token: this.token });
        id = list.recordings.find((r) => r.state === 'recording')?.recording_id ?? null;
      }
      if (id) await api<RecordingView>('POST', meetingPath(this.state.meetingId, `/recordings/${encodeURIComponent(id)}/stop`), { token: this.token });
      this.set({ recording: false, recordingId: null });
      return true;
    } catch (e) {
      this.set({ error: problem(e) });
      return false;
    }
  }
  setPolicy = (policy: Policy) => this.call('POST', '/policy', { policy });
  endMeeting = () => this.call('POST', '/end');
}

const identityKey = (meetingId: string) => `convene-identity:${meetingId}`;

function rememberedIdentity(meetingId: string): string | null {
  try {
    return localStorage.getItem(identityKey(meetingId));
  } catch {
    return null;
  }
}

function remember(meetingId: string, identity: string): void {
  try {
    localStorage.setItem(identityKey(meetingId), identity);
  } catch {
    // Private modes may refuse storage: the person is then new at each visit.
  }
}

function chatLine(e: EventView): ChatLine {
  const d = e.data as { from: string; to?: string | null; text: string; waiting_room?: boolean };
  return { seq: e.seq, at: e.at, from: d.from, to: d.to ?? null, text: d.text, waitingRoom: Boolean(d.waiting_room) };
}
