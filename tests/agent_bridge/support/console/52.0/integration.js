// Stands in for Salesforce's Console Integration Toolkit (the pop-out lock is all the bridge uses).
(function () {
  window.sforce = window.sforce || {};
  window.sforce.console = {
    setCustomConsoleComponentPopoutable(popoutable, callback) {
      window.SforceStandIn.calls.push({ api: "console.setCustomConsoleComponentPopoutable", args: { popoutable } });
      if (callback) callback({ success: true });
    },
  };
})();
