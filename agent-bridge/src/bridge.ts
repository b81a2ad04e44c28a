/**
 * The agent-side bridge: carries out in the agent's browser what the flexsf server decided.
 *
 * It owns no business decisions. Which record a task pops, which records are candidates, what is logged and against
 * what: the task's Temporal workflow decides, and the gateway's agent API (`/agent/...`) tells. The bridge only
 * - loads Salesforce's Open CTI and Console API scripts when Flex is embedded in Lightning,
 * - pops what the server says after the agent accepts a task (the record, a search, or the no-match pop), once per task,
 *   asking once (a long-poll the gateway answers the moment the workflow has decided the pop) rather than polling,
 * - shows the candidate dropdown and sends the agent's choice back,
 * - forwards copilot notes (to the task whose channel they name) and click-to-dial, locks the softphone's pop-out
 *   button during calls, and refreshes Salesforce's view once a task's log is written.
 *
 * It trusts only the Salesforce origins it is configured with (`allowedOrigins`, from the Flex configuration's
 * `salesforce_integration.allowed_origins`): framed by any other page, even another org's `*.lightning.force.com`, it
 * loads no Salesforce script, listens to no click and dials nothing, so nobody else's page can make the agent's Flex
 * place calls.
 *
 * Everything it touches is injected (`flex`, `manager`, `sforce`, `window`, storage), so the same code runs in real
 * Flex and against the test stand-ins.
 */

// ---- the surfaces we rely on (the parts of Flex UI 2.x and Open CTI we call) -----------------------------------------

export type Listener = (payload: any, abort?: () => void) => unknown;

export interface ActionsLike {
  addListener(event: string, listener: Listener): void;
  removeListener?(event: string, listener: Listener): void;
  invokeAction(name: string, payload?: unknown): unknown; // a Promise in Flex 2.x; awaited either way
}

export interface EmitterLike {
  on?(event: string, listener: (...args: any[]) => void): unknown;
  addListener?(event: string, listener: (...args: any[]) => void): unknown;
}

export interface FlexLike {
  Actions: ActionsLike;
  Notifications?: {
    registerNotification(notification: Record<string, unknown>): void;
    showNotification(id: string, context?: Record<string, unknown>): unknown;
  };
}

export interface ManagerLike {
  user?: { token?: string };
  events?: EmitterLike;
  voiceClient?: EmitterLike;
  workerClient?: { activity?: { sid?: string; name?: string; available?: boolean } } & EmitterLike;
  /** The Flex configuration Flex loaded: its offline activity is the one click-to-dial refuses to dial from. */
  serviceConfiguration?: { taskrouter_offline_activity_sid?: string };
  updateConfig?(config: Record<string, unknown>): void;
}

/** Flex's `StartOutboundCall` payload, as the gateway's click-to-dial answers it. */
export interface OutboundCall {
  destination: string;
  taskAttributes?: Record<string, unknown>;
}

/** What Flex hands a `before…`/`after…` task action listener (Flex: `WorkerActionPayload` with an `ITask`). */
export interface TaskActionPayload {
  task?: { taskSid?: string; attributes?: Record<string, any> };
  sid?: string;
}

/** The fields of Flex's `notesSubmitted` payload (`NotesSubmittedEventPayload`) the bridge reads. */
export interface NotesPayload {
  interactionSid?: string;
  channelSid?: string;
  summary?: string;
  sentiment?: string;
  dispositionCode?: { disposition_code?: string | null; topic_path?: string | null } | null;
}

/** The Flex events the bridge listens to, checked against Flex's own declarations (flex-types/contract.ts). */
export const FLEX_EVENTS = ["taskCanceled", "notesSubmitted"] as const;
export type FlexEventName = (typeof FLEX_EVENTS)[number];

export interface OpenCtiResult { success: boolean; returnValue?: any; errors?: unknown }
type Callback = (result: OpenCtiResult) => void;

export interface SforceLike {
  opencti?: {
    SCREENPOP_TYPE?: Record<string, string>;
    screenPop(args: { type: string; params: Record<string, unknown>; callback?: Callback }): void;
    enableClickToDial(args: { callback?: Callback }): void;
    onClickToDial(args: { listener: (payload: any) => void }): void;
    setSoftphonePanelVisibility(args: { visible: boolean; callback?: Callback }): void;
    refreshView?(args?: { callback?: Callback }): void;
  };
  console?: {
    setCustomConsoleComponentPopoutable(popoutable: boolean, callback?: (result: any) => void): void;
  };
}

export interface AgentConfig {
  enabled: boolean;
  hide_crm_container: boolean;
  prevent_popout_during_call: boolean;
  click_to_dial: boolean;
  screen_pop: boolean;
  activity_logging: boolean;
  copilot_notes: boolean;
}

export interface RecordOut { id: string; type?: string | null; name?: string | null; label: string }

export interface TaskOut {
  task_sid: string;
  stage: string;
  direction?: string | null;
  pop: { search_term?: string | null; record?: RecordOut | null; candidates: RecordOut[] };
  record?: RecordOut | null;
  /** The Open CTI screenPop to make when the search found nobody (the server's no-match setting), else null. */
  no_match_pop?: { type: string; params: Record<string, unknown> } | null;
  activity_id?: string | null;
}

/** The answer of the pop long-poll (`POST /agent/pop` with `{task_sid, wait_s}`): the task as far as the pop goes,
 * and whether the workflow has decided it (false: the wait ran out first, ask again). */
export interface PopAnswer extends Partial<TaskOut> {
  decided?: boolean;
  stage: string;
  pop: TaskOut["pop"];
}

export interface BridgeOptions {
  flex: FlexLike;
  manager: ManagerLike;
  /** The gateway's base URL, e.g. https://flexsf.example.com */
  gatewayUrl: string;
  /** The agent's current Flex token (default: manager.user.token, which Flex refreshes). */
  getToken?: () => string | undefined;
  /** Open CTI and the Console API; default: `window.sforce` once the scripts have loaded. */
  sforce?: SforceLike | (() => SforceLike | undefined);
  window?: Window;
  storage?: Storage;
  /**
   * The Salesforce origins the bridge trusts: the org's Lightning origin (`https://<my-domain>.lightning.force.com`)
   * and any custom domain, exactly (no wildcards). None: the bridge stays idle.
   */
  allowedOrigins?: string[] | string;
  /** Salesforce API version of the script URLs. */
  apiVersion?: string;
  /** Abort CompleteTask while a task with candidates has no chosen record (default true). */
  requireSelectionBeforeComplete?: boolean;
  /** Where a task's dropdown goes when Flex does not hand us an element (the test stand-in's task canvas). */
  taskCanvasContainer?: (taskSid: string) => Element | null | undefined;
  /** Back-off after a failed request (the pop's long-poll, the log's looks): first delay, doubling up to maxDelayMs,
   * at most maxAttempts requests. */
  poll?: { initialDelayMs?: number; maxDelayMs?: number; maxAttempts?: number };
  /** How long one pop long-poll may wait on the gateway (seconds; the gateway may cap it), and how many times it is
   * asked again after "not decided yet" before the bridge gives up on the pop. */
  longPoll?: { waitS?: number; maxWaits?: number };
  /** Where the bridge reports what it did and why (never tokens). */
  log?: (message: string) => void;
}

export interface Bridge {
  readonly embedded: boolean;
  readonly origin: string | null;
  /** Why the bridge is idle although framed (an origin it does not trust), else null. */
  readonly refusal: string | null;
  readonly config: AgentConfig | null;
  /** Mount the record dropdown of a task into an element (real Flex: from a TaskCanvas component). */
  attachCanvas(taskSid: string, element: Element): () => void;
  stop(): void;
}

const STORAGE_KEY = "flexsf.bridge.v1";
const NOTIFICATION_ID = "FlexsfBridgeNotice";
const DECIDED = (stage: string) => stage !== "created" && stage !== "accepted";
const FINISHED = new Set(["logging", "logged", "logged_unassociated", "not_logged", "failed", "disabled"]);

/** A task this page accepted, with the identifiers of its channel that Flex's copilot notes name it by. */
interface AcceptedTask {
  sid: string;
  keys: string[];
}

interface Remembered {
  popped: string[];
  /** Tasks with a dropdown, so a page refresh restores it. */
  open: string[];
  /** Accepted tasks, kept after completion: wrap-up notes may come after Complete, and after a refresh. */
  accepted: AcceptedTask[];
  /** Completed or canceled tasks whose Salesforce log the page waits for, to refresh Salesforce's view once. */
  awaitingLog: string[];
  /** Tasks whose log Salesforce's view was refreshed for: once per task. */
  refreshed: string[];
}

/** The channel identifiers of a task that Flex's copilot notes may carry (`interactionSid`, `channelSid`): the
 * Flex interaction and its channel, a Conversations or chat channel, a call. */
export function channelKeys(task: TaskActionPayload["task"]): string[] {
  const a = task?.attributes ?? {};
  const keys = [a.flexInteractionSid, a.flexInteractionChannelSid, a.conversationSid, a.channelSid, a.call_sid];
  return keys.filter((k): k is string => typeof k === "string" && k.length > 0);
}

/** The accepted task the notes belong to, matched by an identifier both carry; never a guess. */
export function taskForNotes(notes: NotesPayload | null | undefined, accepted: AcceptedTask[]): string | undefined {
  const ids = [notes?.interactionSid, notes?.channelSid].filter((k): k is string => typeof k === "string" && !!k);
  return accepted.find((t) => t.keys.some((k) => ids.includes(k)))?.sid;
}

// ---- embedding --------------------------------------------------------------------------------------------------------

/** Salesforce's origin: the `sfdcIframeOrigin` query parameter, else the framing page's origin. */
export function salesforceOrigin(win: Window): string | null {
  const params = new URLSearchParams(win.location.search);
  for (const [key, value] of params) {
    if (key.toLowerCase() === "sfdciframeorigin" && value) return value.replace(/\/+$/, "");
  }
  const ancestors = (win.location as any).ancestorOrigins as DOMStringList | undefined;
  if (ancestors && ancestors.length > 0) return ancestors[0];
  if (win.document.referrer) {
    try {
      return new URL(win.document.referrer).origin;
    } catch {
      return null;
    }
  }
  return null;
}

/** The origin of the page framing this one, as the browser itself reports it (Chromium, Safari); null elsewhere. */
export function framingOrigin(win: Window): string | null {
  const ancestors = (win.location as any).ancestorOrigins as DOMStringList | undefined;
  return ancestors && ancestors.length > 0 ? ancestors[0] : null;
}

/** Configured origins as browsers write an origin (`https://acme.lightning.force.com`), from a list or one
 * comma-separated string. An entry that is not an origin (a wildcard, a path, not a URL) is dropped: it never matches. */
export function trustedOrigins(configured: string[] | string | undefined | null): string[] {
  const entries = Array.isArray(configured) ? configured : typeof configured === "string" ? configured.split(",") : [];
  const origins: string[] = [];
  for (const entry of entries) {
    const text = String(entry).trim().replace(/\/+$/, "");
    if (!text || text.includes("*")) continue;
    try {
      const url = new URL(text);
      if (url.pathname === "/" && !url.search && !url.hash && !url.username && url.origin !== "null") {
        origins.push(url.origin);
      }
    } catch {
      /* not a URL */
    }
  }
  return origins;
}

function framed(win: Window): boolean {
  try {
    return win.self !== win.top;
  } catch {
    return true; // a cross-origin top throws on access in some browsers: that is being framed
  }
}

/** Whether the bridge may act in this page: framed, by an origin it is configured to trust. No wildcard: another org's
 * `*.lightning.force.com` is someone else's page. */
export function isEmbedded(win: Window, origin: string | null, allowed: string[] | string = []): boolean {
  return framed(win) && !!origin && trustedOrigins(allowed).includes(origin);
}

/** Null when the bridge may act for `origin`, else why not (for the log and the agent). The origin a page's URL claims
 * (`sfdcIframeOrigin`) must be the one the browser says frames it, where the browser says so. */
export function originRefusal(win: Window, origin: string | null, allowed: string[] | string = []): string | null {
  if (!framed(win)) return "not embedded in Salesforce";
  if (!origin) return "the Salesforce page framing Flex is unknown";
  const actual = framingOrigin(win);
  if (actual !== null && actual !== origin) {
    return `the page's Salesforce origin (${origin}) is not the page framing Flex (${actual})`;
  }
  const trusted = trustedOrigins(allowed);
  if (trusted.length === 0) return "no Salesforce origin is configured (salesforce_integration.allowed_origins)";
  if (!trusted.includes(origin)) return `${origin} is not a configured Salesforce origin`;
  return null;
}

/** The reason in a gateway error body: `{"detail": "…"}`, or the first of a validation error's list
 * (`{"detail": [{"loc": ["body", "number"], "msg": "…"}]}` → `number: …`). */
export function problemText(problem: any): string | null {
  const detail = problem?.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length > 0 && typeof detail[0]?.msg === "string") {
    const where = Array.isArray(detail[0].loc) ? detail[0].loc.filter((part: unknown) => part !== "body") : [];
    return where.length > 0 ? `${where.join(".")}: ${detail[0].msg}` : detail[0].msg;
  }
  return null;
}

/** Open CTI's `errors` (an array of messages) as one line. */
export function openCtiErrors(errors: unknown): string {
  const list = Array.isArray(errors) ? errors : errors ? [errors] : [];
  const texts = list.map((e: any) => (typeof e === "string" ? e : e?.description ?? e?.message ?? JSON.stringify(e)));
  return texts.filter(Boolean).join("; ") || "no reason given";
}

function loadScript(doc: Document, src: string): Promise<void> {
  const existing = doc.querySelector(`script[src="${src}"]`) as HTMLScriptElement | null;
  if (existing && existing.dataset.flexsfLoaded === "true") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const script = existing ?? doc.createElement("script");
    script.addEventListener("load", () => {
      script.dataset.flexsfLoaded = "true";
      resolve();
    });
    script.addEventListener("error", () => reject(new Error(`could not load ${src}`)));
    if (!existing) {
      script.src = src;
      script.async = true;
      doc.head.appendChild(script);
    }
  });
}

// ---- the bridge -------------------------------------------------------------------------------------------------------

export async function startBridge(options: BridgeOptions): Promise<Bridge> {
  const win = options.window ?? window;
  const doc = win.document;
  const storage = options.storage ?? win.sessionStorage;
  const { flex, manager } = options;
  const base = options.gatewayUrl.replace(/\/+$/, "");
  const getToken = options.getToken ?? (() => manager.user?.token);
  const log = options.log ?? (() => undefined);
  const requireSelection = options.requireSelectionBeforeComplete ?? true;
  const poll = { initialDelayMs: 250, maxDelayMs: 2000, maxAttempts: 20, ...options.poll };
  // Under the usual 30-60 s idle timeouts of proxies and load balancers between Flex and the gateway.
  const longPoll = { waitS: 25, maxWaits: 20, ...options.longPoll };
  const apiVersion = options.apiVersion ?? "52.0";

  const origin = salesforceOrigin(win);
  const refusal = originRefusal(win, origin, options.allowedOrigins);
  const embedded = refusal === null;
  const cleanups: Array<() => void> = [];
  const state: { config: AgentConfig | null; attach: ((sid: string, el: Element) => () => void) | null } = {
    config: null,
    attach: null, // set once the dropdown is in use (embedded, integration enabled)
  };

  const bridge: Bridge = {
    embedded,
    origin,
    refusal: framed(win) ? refusal : null,
    get config() {
      return state.config;
    },
    attachCanvas: (taskSid, element) => (state.attach ? state.attach(taskSid, element) : () => undefined),
    stop: () => cleanups.splice(0).forEach((f) => f()),
  };

  let notificationRegistered = false;
  const notify = (message: string, type: "error" | "warning" | "info" = "error") => {
    log(`notice: ${message}`);
    const notifications = flex.Notifications;
    if (!notifications) return;
    if (!notificationRegistered) {
      notifications.registerNotification({ id: NOTIFICATION_ID, type, content: "{{message}}", timeout: 8000 });
      notificationRegistered = true;
    }
    notifications.showNotification(NOTIFICATION_ID, { message });
  };

  if (!embedded) {
    log(`the bridge stays idle: ${refusal}`);
    // Framed by a page it does not trust: say so (a misconfiguration, or someone else's page framing the agent's Flex).
    if (bridge.refusal) notify(`Salesforce integration off: ${bridge.refusal}`);
    return bridge;
  }

  // -- helpers

  const sforce = (): SforceLike | undefined =>
    typeof options.sforce === "function" ? options.sforce() : options.sforce ?? (win as any).sforce;

  class GatewayError extends Error {
    constructor(readonly status: number, detail: string) {
      super(detail);
    }
  }

  const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const token = getToken();
    if (!token) throw new GatewayError(401, "no Flex token yet");
    const response = await win.fetch(base + path, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) {
      let detail = `HTTP ${response.status}`;
      try {
        detail = problemText(await response.json()) ?? detail;
      } catch {
        /* not JSON */
      }
      throw new GatewayError(response.status, detail);
    }
    return (response.status === 204 ? undefined : await response.json()) as T;
  };

  const remembered = (): Remembered => {
    try {
      const value = JSON.parse(storage.getItem(STORAGE_KEY) ?? "{}");
      return {
        popped: value.popped ?? [],
        open: value.open ?? [],
        accepted: value.accepted ?? [],
        awaitingLog: value.awaitingLog ?? [],
        refreshed: value.refreshed ?? [],
      };
    } catch {
      return { popped: [], open: [], accepted: [], awaitingLog: [], refreshed: [] };
    }
  };
  const remember = (change: (r: Remembered) => void) => {
    const r = remembered();
    change(r);
    // Bounded: only recent tasks matter, and a session's storage is small.
    r.popped = r.popped.slice(-200);
    r.accepted = r.accepted.slice(-50);
    r.awaitingLog = r.awaitingLog.slice(-20);
    r.refreshed = r.refreshed.slice(-50);
    storage.setItem(STORAGE_KEY, JSON.stringify(r));
  };

  const on = (emitter: EmitterLike | undefined, event: string, listener: (...args: any[]) => void) => {
    if (!emitter) return;
    if (emitter.on) emitter.on(event, listener);
    else emitter.addListener?.(event, listener);
  };
  const onAction = (event: string, listener: Listener) => {
    flex.Actions.addListener(event, listener);
    cleanups.push(() => flex.Actions.removeListener?.(event, listener));
  };

  const taskSidOf = (payload: any): string | undefined =>
    payload?.task?.taskSid ?? payload?.task?.sid ?? payload?.sid ?? payload?.taskSid;
  const onEvent = (event: FlexEventName, listener: (...args: any[]) => void) => on(manager.events, event, listener);

  // -- configuration

  try {
    state.config = await api<AgentConfig>("GET", "/agent/config");
  } catch (err) {
    notify(`Salesforce integration unavailable: ${(err as Error).message}`);
    return bridge;
  }
  const config = state.config;
  if (!config.enabled) {
    log("the Salesforce integration is off in the Flex configuration");
    return bridge;
  }

  // -- loading Open CTI and the Console API from the Salesforce origin we are embedded in

  try {
    await loadScript(doc, `${origin}/support/api/${apiVersion}/lightning/opencti_min.js`);
    await loadScript(doc, `${origin}/support/console/${apiVersion}/integration.js`);
  } catch (err) {
    notify(`Salesforce scripts did not load: ${(err as Error).message}`);
  }
  if (!sforce()?.opencti) {
    notify("Salesforce Open CTI is not available: screen pop and click-to-dial are off");
  }

  // -- hide the CRM container

  if (config.hide_crm_container && manager.updateConfig) {
    manager.updateConfig({ componentProps: { AgentDesktopView: { showPanel2: false } } });
  }

  // -- calls: state for the click-to-dial guard, and the pop-out lock

  let activeCalls = 0;
  const setPopoutable = (popoutable: boolean) => {
    if (!config.prevent_popout_during_call) return;
    const consoleApi = sforce()?.console;
    if (!consoleApi) return;
    consoleApi.setCustomConsoleComponentPopoutable(popoutable, (result: any) => {
      if (result && result.success === false) log(`setCustomConsoleComponentPopoutable(${popoutable}) failed`);
    });
  };
  on(manager.voiceClient, "incoming", (call: EmitterLike) => {
    activeCalls += 1;
    setPopoutable(false);
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      activeCalls = Math.max(0, activeCalls - 1);
      if (activeCalls === 0) setPopoutable(true);
    };
    for (const event of ["disconnect", "cancel", "reject", "error"]) on(call, event, end);
  });
  if (config.prevent_popout_during_call) {
    const unlock = () => {
      if (activeCalls > 0) setPopoutable(true);
    };
    win.addEventListener("pagehide", unlock);
    cleanups.push(() => win.removeEventListener("pagehide", unlock));
  }

  // -- the record dropdown

  interface Canvas {
    view: TaskOut | null;
    elements: Set<Element>;
    busy: boolean;
    message: string;
  }
  const canvases = new Map<string, Canvas>();
  const canvasOf = (sid: string): Canvas => {
    let canvas = canvases.get(sid);
    if (!canvas) {
      canvas = { view: null, elements: new Set(), busy: false, message: "" };
      canvases.set(sid, canvas);
    }
    return canvas;
  };
  const unchosen = (view: TaskOut | null) =>
    !!view && view.pop.candidates.length > 0 && !view.record && !FINISHED.has(view.stage);

  const render = (sid: string) => {
    const canvas = canvasOf(sid);
    const view = canvas.view;
    for (const element of canvas.elements) {
      let root = element.querySelector("[data-flexsf-dropdown]") as HTMLElement | null;
      if (!view || view.pop.candidates.length === 0 || !config.activity_logging) {
        root?.remove();
        continue;
      }
      if (!root) {
        root = doc.createElement("div");
        root.dataset.flexsfDropdown = sid;
        const label = doc.createElement("label");
        label.textContent = "Salesforce record for this task ";
        const select = doc.createElement("select");
        select.dataset.flexsf = "record-select";
        select.addEventListener("change", () => void choose(sid, select.value));
        label.appendChild(select);
        const status = doc.createElement("div");
        status.dataset.flexsf = "record-status";
        status.setAttribute("role", "status");
        root.append(label, status);
        element.appendChild(root);
      }
      const select = root.querySelector("select") as HTMLSelectElement;
      const status = root.querySelector("[data-flexsf=record-status]") as HTMLElement;
      const options: Array<[string, string]> = [["", "Select a record…"]];
      for (const c of view.pop.candidates) options.push([c.id, c.label]);
      select.replaceChildren(
        ...options.map(([value, text]) => {
          const option = doc.createElement("option");
          option.value = value;
          option.textContent = text;
          if (value === "") option.disabled = true;
          return option;
        }),
      );
      select.value = view.record?.id ?? "";
      select.disabled = canvas.busy || FINISHED.has(view.stage);
      status.textContent =
        canvas.message || (view.record ? `Related to ${view.record.label}` : "Choose the record this task relates to");
    }
  };

  const attachCanvas = (sid: string, element: Element): (() => void) => {
    const canvas = canvasOf(sid);
    canvas.elements.add(element);
    if (canvas.view) render(sid);
    else void refresh(sid);
    return () => {
      canvas.elements.delete(element);
      element.querySelector("[data-flexsf-dropdown]")?.remove();
    };
  };

  state.attach = attachCanvas;

  const showDropdown = (view: TaskOut) => {
    const sid = view.task_sid;
    const canvas = canvasOf(sid);
    canvas.view = view;
    const container = options.taskCanvasContainer?.(sid);
    if (container) canvas.elements.add(container);
    if (view.pop.candidates.length > 0) remember((r) => void (r.open.includes(sid) || r.open.push(sid)));
    render(sid);
  };

  const refresh = async (sid: string) => {
    try {
      showDropdown(await api<TaskOut>("GET", `/agent/tasks/${sid}`));
    } catch (err) {
      log(`could not read task ${sid}: ${(err as Error).message}`);
    }
  };

  const choose = async (sid: string, recordId: string) => {
    const canvas = canvasOf(sid);
    if (!recordId || canvas.busy) return;
    canvas.busy = true;
    canvas.message = "Saving…";
    render(sid);
    try {
      const record = await api<RecordOut>("PUT", `/agent/tasks/${sid}/record`, { record_id: recordId });
      if (canvas.view) canvas.view = { ...canvas.view, record, stage: "in_progress" };
      canvas.message = `Related to ${record.label}`;
    } catch (err) {
      canvas.message = `Could not relate the record: ${(err as Error).message}`;
      notify(canvas.message);
    } finally {
      canvas.busy = false;
      render(sid);
    }
  };

  const forget = (sid: string) => {
    remember((r) => void (r.open = r.open.filter((s) => s !== sid)));
    const canvas = canvases.get(sid);
    if (canvas) {
      for (const element of canvas.elements) element.querySelector("[data-flexsf-dropdown]")?.remove();
      canvases.delete(sid);
    }
  };

  onAction("beforeCompleteTask", (payload: any, abort?: () => void) => {
    const sid = taskSidOf(payload);
    if (!sid || !requireSelection || !config.activity_logging) return;
    if (unchosen(canvases.get(sid)?.view ?? null)) {
      notify("Choose the Salesforce record this task relates to before completing it");
      abort?.();
    }
  });
  onAction("afterCompleteTask", (payload: TaskActionPayload) => {
    const sid = taskSidOf(payload);
    if (sid) {
      forget(sid);
      void awaitLog(sid);
    }
  });
  onEvent("taskCanceled", (task: any) => {
    const sid = task?.taskSid ?? task?.sid;
    if (sid) {
      forget(sid);
      void awaitLog(sid);
    }
  });

  // -- screen pop

  const delay = (ms: number) => new Promise((resolve) => win.setTimeout(resolve, ms));

  // -- the log: once the server has written it, Salesforce's view is refreshed (as the original does after saveLog),
  // so the agent sees the new activity on the record they are looking at.

  const logWaits = new Set<string>();
  const awaitLog = async (sid: string) => {
    if (!config.activity_logging || logWaits.has(sid)) return;
    if (remembered().refreshed.includes(sid)) {
      log(`task ${sid}: Salesforce's view was refreshed for its log already`);
      return;
    }
    logWaits.add(sid);
    remember((r) => void (r.awaitingLog.includes(sid) || r.awaitingLog.push(sid)));
    try {
      let wait = poll.initialDelayMs;
      for (let attempt = 1; attempt <= poll.maxAttempts; attempt++) {
        try {
          const view = await api<TaskOut>("GET", `/agent/tasks/${sid}`);
          if (view.activity_id) {
            remember((r) => void r.refreshed.push(sid));
            const opencti = sforce()?.opencti;
            if (opencti?.refreshView) opencti.refreshView();
            log(`task ${sid} is logged: Salesforce's view refreshed`);
            return;
          }
          if (FINISHED.has(view.stage) && view.stage !== "logging") return; // nothing was or will be written
        } catch (err) {
          const status = err instanceof GatewayError ? err.status : 0;
          if (status !== 503 && status !== 0) {
            log(`stopped waiting for the log of ${sid}: ${(err as Error).message}`);
            return;
          }
        }
        await delay(wait);
        wait = Math.min(wait * 2, poll.maxDelayMs);
      }
      log(`the log of ${sid} was not written after ${poll.maxAttempts} looks; Salesforce's view is left as it is`);
    } finally {
      logWaits.delete(sid);
      remember((r) => void (r.awaitingLog = r.awaitingLog.filter((s) => s !== sid)));
    }
  };

  // One request that the gateway answers the moment the workflow has decided the pop (a workflow update that waits
  // for the decision), so the agent waits for no poll interval. "Not decided yet" (the wait ran out) asks again at
  // once; only failures back off.
  const awaitPop = async (sid: string): Promise<TaskOut | null> => {
    let wait = poll.initialDelayMs;
    let failures = 0;
    for (let waits = 0; waits < longPoll.maxWaits; ) {
      let answer: PopAnswer | undefined;
      try {
        // The sid in the body, not the path: the browser preflights this cross-origin call (it carries the token)
        // and caches the preflight per URL, so one URL for every task pays one preflight, not one per task.
        answer = await api<PopAnswer | undefined>("POST", "/agent/pop", { task_sid: sid, wait_s: longPoll.waitS });
      } catch (err) {
        // 503/504/network: the gateway, Temporal or every worker is away for a moment (a worker restarting); 404: no
        // workflow (yet). Anything else is final: 403 is another worker's task (the gateway waits for the acceptance
        // itself), 422 a wait it refuses.
        const status = err instanceof GatewayError ? err.status : 0;
        if (![404, 503, 504, 0].includes(status)) {
          log(`gave up on the pop of ${sid}: ${(err as Error).message}`);
          return null;
        }
        if (++failures >= poll.maxAttempts) {
          log(`gave up on the pop of ${sid} after ${failures} failed requests: ${(err as Error).message}`);
          return null;
        }
        await delay(wait);
        wait = Math.min(wait * 2, poll.maxDelayMs);
        continue;
      }
      failures = 0;
      wait = poll.initialDelayMs;
      if (answer && (answer.decided ?? DECIDED(answer.stage))) {
        return { task_sid: sid, ...answer } as TaskOut;
      }
      waits += 1;
    }
    log(`the pop of ${sid} was not decided after ${longPoll.maxWaits} waits of ${longPoll.waitS} s`);
    return null;
  };

  const screenPop = (type: string, params: Record<string, unknown>) =>
    new Promise<void>((resolve) => {
      const opencti = sforce()?.opencti;
      if (!opencti) return resolve();
      const types = opencti.SCREENPOP_TYPE ?? {};
      opencti.screenPop({
        type: types[type] ?? type,
        params,
        callback: (result) => {
          if (!result?.success) log(`screenPop ${type} failed`);
          resolve();
        },
      });
    });

  const popInFlight = new Set<string>();
  onAction("afterAcceptTask", async (payload: any) => {
    const sid = taskSidOf(payload);
    if (!sid || popInFlight.has(sid)) return;
    const direction = String(payload?.task?.attributes?.direction ?? "").toLowerCase();
    if (direction === "outbound") return; // the dialed record is already open
    const alreadyPopped = remembered().popped.includes(sid);
    if (alreadyPopped && canvases.has(sid)) return;
    popInFlight.add(sid);
    try {
      const view = await awaitPop(sid);
      if (!view) return;
      if (view.pop.candidates.length > 0) showDropdown(view);
      if (alreadyPopped || !config.screen_pop || (view.direction ?? "").toLowerCase() === "outbound") return;
      remember((r) => void r.popped.push(sid)); // before popping: a refresh mid-pop must not pop again
      if (view.pop.record) {
        await screenPop("SOBJECT", { recordId: view.pop.record.id });
      } else if (view.pop.candidates.length > 0 && (view.pop.search_term ?? "").length >= 3) {
        await screenPop("SEARCH", { searchString: view.pop.search_term });
      } else if (view.no_match_pop) {
        await screenPop(view.no_match_pop.type, view.no_match_pop.params);
      }
    } finally {
      popInFlight.delete(sid);
    }
  });

  // After a page refresh: the dropdowns of the tasks still being handled come back (the server has their state), and
  // so do the waits for logs not yet written.
  await Promise.all(remembered().open.map((sid) => refresh(sid)));
  for (const sid of remembered().awaitingLog) void awaitLog(sid);

  // -- copilot notes: matched to the task by the channel identifiers both carry, remembered across a refresh

  onAction("afterAcceptTask", (payload: TaskActionPayload) => {
    const sid = taskSidOf(payload);
    if (!sid) return;
    const keys = channelKeys(payload?.task);
    remember((r) => {
      r.accepted = r.accepted.filter((t) => t.sid !== sid);
      r.accepted.push({ sid, keys });
    });
  });
  if (config.copilot_notes) {
    onEvent("notesSubmitted", async (notes: NotesPayload) => {
      const sid = taskForNotes(notes, remembered().accepted);
      if (!sid) {
        // Sending them to some other task would put one customer's notes on another's record: say so instead.
        const message = "Copilot notes did not match a task accepted on this page: they were not saved to Salesforce";
        console.warn(`flexsf: ${message}`);
        notify(message, "warning");
        return;
      }
      const disposition: { disposition_code?: unknown; topic_path?: unknown } = notes?.dispositionCode ?? {};
      const topicPath = disposition.topic_path;
      const topics = Array.isArray(topicPath) ? topicPath.map(String) : topicPath ? [String(topicPath)] : [];
      try {
        await api("POST", `/agent/tasks/${sid}/notes`, {
          disposition: disposition.disposition_code ?? null,
          summary: notes?.summary ?? null,
          topics,
          sentiment: notes?.sentiment ?? null,
        });
      } catch (err) {
        notify(`Copilot notes were not saved to Salesforce: ${(err as Error).message}`);
      }
    });
  }

  // -- click-to-dial

  const offlineSid = manager.serviceConfiguration?.taskrouter_offline_activity_sid;
  if (config.click_to_dial && !offlineSid) {
    log("the Flex configuration names no offline activity (taskrouter_offline_activity_sid): dialing is not refused");
  }
  if (config.click_to_dial && sforce()?.opencti) {
    const opencti = sforce()!.opencti!;
    const dial = async (payload: any) => {
      // Open CTI relays clicks from the page it was loaded from; should this page now claim another Salesforce
      // origin than the trusted one it started with, the click is not believed.
      const now = salesforceOrigin(win);
      if (now !== origin || originRefusal(win, now, options.allowedOrigins) !== null) {
        notify(`Could not dial: the click did not come from ${origin}`);
        return;
      }
      if (activeCalls > 0) {
        notify("You are already on a call: finish it before dialing another number");
        return;
      }
      // By sid, not by name: an activity named "Offline" need not be the offline one, and the offline one may be
      // called anything.
      const activity = manager.workerClient?.activity;
      if (offlineSid && activity?.sid === offlineSid) {
        notify(`You are ${activity.name ?? "offline"}: change your activity to dial`);
        return;
      }
      try {
        const call = await api<OutboundCall>("POST", "/agent/click-to-dial", {
          number: payload?.number,
          recordId: payload?.recordId ?? null,
          objectType: payload?.objectType ?? null,
          recordName: payload?.recordName ?? null,
          accountId: payload?.accountId ?? null,
          contactId: payload?.contactId ?? null,
          personAccount: Boolean(payload?.personAccount),
        });
        opencti.setSoftphonePanelVisibility({ visible: true });
        await flex.Actions.invokeAction("StartOutboundCall", call);
      } catch (err) {
        notify(`Could not dial: ${(err as Error).message}`);
      }
    };
    // Listen to clicks only once Salesforce has enabled them, as the original does ("if successful").
    opencti.enableClickToDial({
      callback: (result) => {
        if (result?.success) opencti.onClickToDial({ listener: dial });
        else notify(`Click-to-dial is off: Salesforce did not enable it (${openCtiErrors(result?.errors)})`);
      },
    });
  }

  log("the Salesforce bridge is ready");
  return bridge;
}
