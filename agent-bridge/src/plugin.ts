/**
 * The Flex plugin wrapper: `init(flex, manager)` as Flex UI 2.x calls a plugin, wiring the bridge to real Flex.
 *
 * Settings come from the Flex configuration's `ui_attributes.custom_data.salesforce_integration` (what the manager
 * exposes as `manager.configuration.custom_data`): `gateway_url` and `allowed_origins` (required: the Salesforce
 * origins the bridge trusts, e.g. `["https://acme.lightning.force.com"]`; without them it stays idle), `api_version`,
 * `require_selection_before_complete`. The feature flags themselves are read from the gateway (`GET /agent/config`).
 */
import { startBridge, type Bridge, type BridgeOptions, type FlexLike, type ManagerLike } from "./bridge";

export {
  startBridge,
  salesforceOrigin,
  framingOrigin,
  isEmbedded,
  originRefusal,
  trustedOrigins,
  problemText,
} from "./bridge";

export const PLUGIN_NAME = "FlexsfSalesforceBridge";

interface PluginSettings {
  gateway_url?: string;
  api_version?: string;
  allowed_origins?: string[] | string;
  require_selection_before_complete?: boolean;
}

/** A TaskCanvas child that hands its DOM node to the bridge (React comes from Flex's page, not from this bundle). */
function dropdownComponent(React: any, bridge: Bridge) {
  return function FlexsfRecordDropdown(props: { task?: { taskSid?: string } }) {
    const ref = React.useRef(null);
    const sid = props.task?.taskSid;
    React.useEffect(() => (sid && ref.current ? bridge.attachCanvas(sid, ref.current) : undefined), [sid]);
    return React.createElement("div", { ref, className: "flexsf-record-dropdown" });
  };
}

export async function init(flex: FlexLike & Record<string, any>, manager: ManagerLike & Record<string, any>,
                           overrides: Partial<BridgeOptions> = {}): Promise<Bridge | undefined> {
  const settings: PluginSettings = manager.configuration?.custom_data?.salesforce_integration ?? {};
  const gatewayUrl = overrides.gatewayUrl ?? settings.gateway_url;
  if (!gatewayUrl) {
    console.warn(`${PLUGIN_NAME}: no salesforce_integration.gateway_url in the Flex configuration; not started`);
    return undefined;
  }
  const bridge = await startBridge({
    flex,
    manager,
    gatewayUrl,
    apiVersion: settings.api_version,
    allowedOrigins: settings.allowed_origins,
    requireSelectionBeforeComplete: settings.require_selection_before_complete,
    ...overrides,
  });
  const React = (window as any).React;
  if (bridge.embedded && bridge.config?.enabled && bridge.config.activity_logging && flex.TaskCanvas?.Content && React) {
    flex.TaskCanvas.Content.add(React.createElement(dropdownComponent(React, bridge), { key: "flexsf-record-dropdown" }),
                                { sortOrder: 1 });
  }
  return bridge;
}

export const plugin = { name: PLUGIN_NAME, init: (flex: any, manager: any) => void init(flex, manager) };

// Loaded by Flex as a plugin bundle: register the way flex-plugin's loadPlugin does.
const Plugins = (globalThis as any).Twilio?.Flex?.Plugins;
if (Plugins?.init) Plugins.init(plugin);
