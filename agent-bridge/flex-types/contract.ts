/**
 * The bridge's hand-written Flex shapes (src/bridge.ts) held against Flex UI's own declarations (flex-ui.d.ts, extracted
 * from npm @twilio/flex-ui). Compiled by `npm run typecheck`, never bundled: a Flex release that renames an event, a
 * member of the manager, or a field of the notes or action payloads the bridge reads fails the type check once
 * `make flex-types` has extracted it.
 *
 * Each check is a type that must be `true`; otherwise the compiler names what differs. Two questions per shape: every
 * member the bridge names exists in Flex's declaration (a renamed one would make the bridge read `undefined` without a
 * type error, because the bridge's members are optional), and Flex's value fits where the bridge expects it.
 *
 * Action names ("AcceptTask", "CompleteTask", "StartOutboundCall") are not checked: Flex declares them as `string`.
 */
import type {
  EmitterLike,
  FlexEventName,
  FlexLike,
  ManagerLike,
  NotesPayload,
  OutboundCall,
  TaskActionPayload,
} from "../src/bridge";
import type * as Flex from "./flex-ui";

type Check<T extends true> = T;
/** `true` when every member of `Ours` is declared by `Theirs`, else the members Flex does not declare. */
type Declared<Ours, Theirs> = [Exclude<keyof Ours, keyof Theirs>] extends [never]
  ? true
  : { "not declared by Flex": Exclude<keyof Ours, keyof Theirs> };
/** `true` when Flex's value can be used where the bridge expects `Ours`. */
type Fits<Theirs, Ours> = [Theirs] extends [Ours] ? true : { "does not fit": Theirs; expected: Ours };
type Both<A, B> = A extends true ? (B extends true ? true : B) : A;

type Manager = NonNullable<ManagerLike>;
type Worker = NonNullable<Manager["workerClient"]>;
type Disposition = NonNullable<NotesPayload["dispositionCode"]>;
type Task = NonNullable<TaskActionPayload["task"]>;
type Notifications = NonNullable<FlexLike["Notifications"]>;

export type FlexContract = [
  // Events the bridge listens to (`manager.events.addListener(name, …)`).
  Check<Fits<FlexEventName, Flex.FlexEvent>>,
  // The manager: its members, the token, the worker's activity (by sid), the offline activity in the configuration.
  Check<Both<Declared<Manager, Flex.Manager>, Fits<Flex.Manager, Manager>>>,
  Check<Declared<NonNullable<Manager["user"]>, Flex.UserInfo>>,
  Check<Declared<Worker, Flex.Worker>>,
  Check<Declared<NonNullable<Worker["activity"]>, Flex.Activity>>,
  Check<Declared<NonNullable<Manager["serviceConfiguration"]>, Flex.ServiceConfiguration>>,
  Check<Both<Declared<EmitterLike, Flex.FlexEventEmitter>, Fits<Flex.VoiceClient, EmitterLike>>>,
  // `notesSubmitted`'s payload and its disposition code.
  Check<Both<Declared<NotesPayload, Flex.NotesSubmittedEventPayload>, Fits<Flex.NotesSubmittedEventPayload, NotesPayload>>>,
  Check<Both<Declared<Disposition, Flex.DispositionCode>, Fits<Flex.DispositionCode, Disposition>>>,
  // What a task action listener receives: the task's sid and attributes.
  Check<Both<Declared<TaskActionPayload, Flex.WorkerActionPayload>, Fits<Flex.WorkerActionPayload, TaskActionPayload>>>,
  Check<Both<Declared<Task, Flex.ITask>, Fits<Flex.ITask, Task>>>,
  // The StartOutboundCall payload the gateway answers click-to-dial with.
  Check<Declared<OutboundCall, Flex.StartOutboundCallPayload>>,
  Check<Fits<OutboundCall["destination"], Flex.StartOutboundCallPayload["destination"]>>,
  // Actions and Notifications as the bridge calls them.
  Check<Both<Declared<FlexLike["Actions"], Flex.Actions>, Fits<Flex.Actions, FlexLike["Actions"]>>>,
  Check<Both<Declared<Notifications, Flex.Notifications>, Fits<Flex.Notifications, Notifications>>>,
];
