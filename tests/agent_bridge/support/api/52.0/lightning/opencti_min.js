// Stands in for Salesforce's Open CTI for Lightning (served from the "Salesforce" origin at the real path).
// Records every call in SforceStandIn.calls; the tests click a number through SforceStandIn.clickToDial(payload).
(function () {
  const calls = [];
  const record = (api, args) => {
    const copy = {};
    for (const [key, value] of Object.entries(args || {})) if (typeof value !== "function") copy[key] = value;
    // `at`: when it was called, on the wall clock in ms (for the bench's accept → screenPop time).
    calls.push({ api, args: JSON.parse(JSON.stringify(copy)), at: performance.timeOrigin + performance.now() });
  };
  const ok = (args, returnValue) => args && args.callback && args.callback({ success: true, returnValue, errors: null });
  // A failed call answers {success: false, returnValue: null, errors: [messages]} (Open CTI's response object).
  const fail = (args, message) => args && args.callback && args.callback({ success: false, returnValue: null, errors: [message] });
  // What the tests make Salesforce refuse, from the Flex page's URL: `sfRefuse=enableClickToDial`.
  const refused = new URLSearchParams(location.search).getAll("sfRefuse");
  let clickListener = null;

  window.sforce = window.sforce || {};
  window.sforce.opencti = {
    SCREENPOP_TYPE: { SOBJECT: "sobject", URL: "url", OBJECTHOME: "objecthome", LIST: "list", SEARCH: "search",
                      NEW_RECORD_MODAL: "newRecord", FLOW: "flow" },
    CALL_TYPE: { INBOUND: "inbound", OUTBOUND: "outbound", INTERNAL: "internal" },
    screenPop(args) {
      record("opencti.screenPop", args);
      // NEW_RECORD_MODAL: `params: {entityName (required), defaultFieldValues (optional)}` (screenPop() for
      // Lightning Experience, Open CTI Developer Guide); strict here: without entityName the pop fails.
      if (args.type === "newRecord" && !(args.params && args.params.entityName)) return fail(args, "entityName is required");
      ok(args, null);
    },
    enableClickToDial(args) {
      record("opencti.enableClickToDial", args);
      if (refused.includes("enableClickToDial")) return fail(args, "The stand-in's Salesforce refused to enable click-to-dial");
      ok(args, null);
    },
    disableClickToDial(args) { record("opencti.disableClickToDial", args); ok(args, true); },
    onClickToDial(args) { record("opencti.onClickToDial", args); clickListener = args.listener; },
    setSoftphonePanelVisibility(args) { record("opencti.setSoftphonePanelVisibility", args); ok(args, true); },
    isSoftphonePanelVisible(args) { record("opencti.isSoftphonePanelVisible", args); ok(args, { visible: true }); },
    refreshView(args) { record("opencti.refreshView", args); },
  };
  window.SforceStandIn = {
    calls,
    callsTo(api) { return calls.filter((c) => c.api === api).map((c) => c.args); },
    // What Salesforce does when the agent clicks a phone number; resolves when the listener is done.
    async clickToDial(payload) {
      if (!clickListener) throw new Error("no onClickToDial listener");
      return await clickListener(payload);
    },
  };
})();
