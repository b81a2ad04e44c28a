#!/usr/bin/env node
/**
 * Writes flex-types/flex-ui.d.ts: the declarations of npm `@twilio/flex-ui` that the bridge relies on, read with the
 * TypeScript compiler from the published package, so `npm run typecheck` can hold the bridge's hand-written Flex
 * shapes (src/bridge.ts) against them (flex-types/contract.ts) without installing Flex UI.
 *
 * Usage: `node flex-types/extract.mjs [version]` (`make flex-types`). It installs that version of the package (with its
 * dependencies, about 750 MB; `--ignore-scripts`) into a temporary directory, extracts, and removes the directory.
 * `--from <dir>` reads a directory where the package is installed already instead.
 *
 * Each type below is written with every public member. A member whose type is another of these types is written by
 * name; primitives, literals, unions and arrays as they are; functions as `(...args: any[]) => unknown` (the contract
 * checks that a method exists, not its signature); an object with only an index signature as `{ [key: string]: T }`;
 * any other object as `unknown`: the bridge does not look inside it.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const from = args.includes("--from") ? args.splice(args.indexOf("--from"), 2)[1] : null;
const VERSION = args[0] ?? "2.17.1";
const HERE = dirname(fileURLToPath(import.meta.url));
const OUTPUT = join(HERE, "flex-ui.d.ts");
const ts = createRequire(join(HERE, "..", "package.json"))("typescript");

// The types of Flex UI the bridge meets, as the package declares them (some only under src/, not from its index).
const PROBE = `
import type * as Flex from "@twilio/flex-ui";
import type { FlexEvent as FlexEventEnum } from "@twilio/flex-ui/src/FlexEvents";
import type { NotesSubmittedEventPayload as Notes } from "@twilio/flex-ui/src/components/canvas/TaskWrapupPanel/TaskWrapupPanel.definitions";
import type { WorkerActionPayload as ActionPayload } from "@twilio/flex-ui/src/actions/WorkerActions";
import type { StartOutboundCallPayload as OutboundCall } from "@twilio/flex-ui/src/OutboundCalling";
export type FlexEvent = \`\${FlexEventEnum}\`;
export type Manager = Flex.Manager;
export type UserInfo = Flex.Manager["user"];
export type FlexEventEmitter = Flex.Manager["events"];
export type VoiceClient = Flex.Manager["voiceClient"];
export type Worker = NonNullable<Flex.Manager["workerClient"]>;
export type Activity = Worker["activity"];
export type ServiceConfiguration = Flex.ServiceConfiguration;
export type NotesSubmittedEventPayload = Notes;
export type DispositionCode = NonNullable<Notes["dispositionCode"]>;
export type WorkerActionPayload = ActionPayload;
export type ITask = Flex.ITask;
export type StartOutboundCallPayload = OutboundCall;
export type Actions = typeof Flex.Actions;
export type Notifications = typeof Flex.Notifications;
`;

function install(dir) {
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({ private: true, dependencies: { "@twilio/flex-ui": VERSION, react: "17.0.2", "react-dom": "17.0.2" } }),
  );
  execFileSync("npm", ["install", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], {
    cwd: dir,
    stdio: "inherit",
  });
}

function extract(dir) {
  const probe = join(dir, "probe.ts");
  writeFileSync(probe, PROBE);
  const program = ts.createProgram([probe], {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2020,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    jsx: ts.JsxEmit.React,
    lib: ["lib.es2020.d.ts", "lib.dom.d.ts"],
  });
  const problems = ts.getPreEmitDiagnostics(program).filter((d) => d.file?.fileName === probe);
  if (problems.length > 0) {
    const text = problems.map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n")).join("\n");
    throw new Error(`@twilio/flex-ui ${VERSION} no longer declares what the bridge relies on:\n${text}`);
  }
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(probe);
  const roots = new Map(); // type → name
  const declared = new Map(); // an interface's or class's symbol → name: one generic instantiation is another type
  const aliases = [];
  for (const statement of source.statements) {
    if (!ts.isTypeAliasDeclaration(statement)) continue;
    const type = checker.getTypeAtLocation(statement.name);
    aliases.push([statement.name.text, type]);
    if (!roots.has(type)) roots.set(type, statement.name.text);
    if (type.symbol && type.flags & ts.TypeFlags.Object && !declared.has(type.symbol)) {
      declared.set(type.symbol, statement.name.text);
    }
  }
  const rootName = (type) => roots.get(type) ?? (type.flags & ts.TypeFlags.Object ? declared.get(type.symbol) : undefined);

  const isPrivate = (symbol) =>
    (symbol.declarations ?? []).some(
      (d) => ts.getCombinedModifierFlags(d) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected) || d.name?.kind === ts.SyntaxKind.PrivateIdentifier,
    );

  const print = (type, self) => {
    const known = rootName(type);
    if (known && known !== self) return known;
    const f = type.flags;
    if (f & ts.TypeFlags.Boolean) return "boolean";
    if (type.isUnion()) {
      const parts = [...new Set(type.types.map((t) => print(t, self)))];
      if (parts.includes("true") && parts.includes("false")) parts.splice(parts.indexOf("true"), 1, "boolean");
      return parts.filter((p) => p !== "false" || !parts.includes("boolean")).join(" | ");
    }
    if (type.isStringLiteral()) return JSON.stringify(type.value);
    if (type.isNumberLiteral()) return String(type.value);
    if (f & (ts.TypeFlags.String | ts.TypeFlags.Number | ts.TypeFlags.BigInt | ts.TypeFlags.BooleanLiteral)) {
      return checker.typeToString(type);
    }
    if (f & (ts.TypeFlags.Null | ts.TypeFlags.Undefined | ts.TypeFlags.Void | ts.TypeFlags.Any | ts.TypeFlags.Unknown)) {
      return checker.typeToString(type);
    }
    if (f & ts.TypeFlags.Never) return "never";
    if (checker.isArrayType(type)) return `Array<${print(checker.getTypeArguments(type)[0], self)}>`;
    if (f & ts.TypeFlags.Object) {
      if (type.getCallSignatures().length > 0) return "(...args: any[]) => unknown";
      const index = type.getStringIndexType();
      if (index && type.getProperties().length === 0) return `{ [key: string]: ${print(index, self)} }`;
    }
    return "unknown";
  };

  const lines = [
    `// Generated by flex-types/extract.mjs from npm @twilio/flex-ui ${VERSION}: do not edit; \`make flex-types\` rewrites it.`,
    "// The declarations the agent bridge relies on, members' types reduced as extract.mjs describes.",
    "/* eslint-disable */",
    "",
  ];
  for (const [name, type] of aliases) {
    if (roots.get(type) !== name) {
      lines.push(`export type ${name} = ${roots.get(type)};`, "");
      continue;
    }
    if (type.isUnion() && type.types.every((t) => t.isStringLiteral())) {
      lines.push(`export type ${name} =`, ...type.types.map((t) => `  | ${JSON.stringify(t.value)}`), "");
      continue;
    }
    lines.push(`export interface ${name} {`);
    const members = checker
      .getPropertiesOfType(type)
      .filter((p) => p.name !== "prototype" && !p.name.startsWith("__") && !isPrivate(p))
      .sort((a, b) => a.name.localeCompare(b.name));
    for (const member of members) {
      const optional = member.flags & ts.SymbolFlags.Optional ? "?" : "";
      const key = /^[A-Za-z_$][\w$]*$/.test(member.name) ? member.name : JSON.stringify(member.name);
      lines.push(`  ${key}${optional}: ${print(checker.getTypeOfSymbol(member), name)};`);
    }
    lines.push("}", "");
  }
  return lines.join("\n");
}

const dir = from ?? mkdtempSync(join(tmpdir(), "flex-types-"));
try {
  if (!from) install(dir);
  writeFileSync(OUTPUT, extract(dir));
  console.log(`wrote flex-types/flex-ui.d.ts from @twilio/flex-ui ${VERSION}`);
} finally {
  if (!from) rmSync(dir, { recursive: true, force: true });
  else rmSync(join(dir, "probe.ts"), { force: true });
}
