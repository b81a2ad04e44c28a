// Stands in for Twilio Flex UI 2.x at the surface the bridge uses: Actions (before/after listeners, abort,
// invokeAction), manager (user.token, events, voiceClient, workerClient, serviceConfiguration, updateConfig),
// Notifications and a task canvas. Every call is recorded in FlexStandIn.calls for the tests to read.
(function () {
  function emitter() {
    const listeners = {};
    return {
      on(event, fn) { (listeners[event] = listeners[event] || []).push(fn); },
      addListener(event, fn) { this.on(event, fn); },
      async emit(event, ...args) {
        return Promise.all((listeners[event] || []).map((fn) => fn(...args)));
      },
      count(event) { return (listeners[event] || []).length; },
    };
  }

  const calls = [];
  const record = (api, args) => calls.push({ api, args: JSON.parse(JSON.stringify(args === undefined ? null : args)) });
  const actionListeners = {};

  const Actions = {
    addListener(event, fn) { (actionListeners[event] = actionListeners[event] || []).push(fn); },
    removeListener(event, fn) { actionListeners[event] = (actionListeners[event] || []).filter((f) => f !== fn); },
    // Like Flex: before-listeners may abort; the action runs; after-listeners follow. Resolves when all are done.
    async invokeAction(name, payload) {
      record("Actions.invokeAction", { name, payload });
      let aborted = false;
      const abort = () => { aborted = true; };
      for (const fn of actionListeners["before" + name] || []) {
        await fn(payload, abort);
        if (aborted) return { aborted: true };
      }
      await Promise.all((actionListeners["after" + name] || []).map((fn) => fn(payload, abort)));
      return { aborted: false };
    },
  };

  const Notifications = {
    registered: {},
    registerNotification(n) { this.registered[n.id] = n; record("Notifications.registerNotification", n); },
    showNotification(id, context) { record("Notifications.showNotification", { id, context }); },
  };

  const voiceClient = emitter();
  const manager = {
    user: { get token() { return window.__FLEXSF_TOKEN__; } },
    events: emitter(),
    voiceClient,
    // The worker's activity as twilio-taskrouter's Worker holds it ({sid, name, available}).
    workerClient: Object.assign(emitter(), { activity: { sid: "WAavailable", name: "Available", available: true } }),
    // The Flex configuration as Flex fetched it (the tests read it from the Twilio sandbox's Flex Configuration).
    serviceConfiguration: window.__FLEXSF_SERVICE_CONFIGURATION__ || {},
    updateConfig(config) { record("manager.updateConfig", config); },
  };

  function taskCanvasContainer(taskSid) {
    let section = document.querySelector(`section[data-task-sid="${taskSid}"]`);
    if (!section) {
      section = document.createElement("section");
      section.dataset.taskSid = taskSid;
      section.textContent = "Task " + taskSid;
      document.getElementById("task-canvas").appendChild(section);
    }
    return section;
  }

  // A voice call as the Voice SDK hands it over: an emitter the tests end with call.emit("disconnect").
  function incomingCall() {
    const call = emitter();
    voiceClient.emit("incoming", call);
    return call;
  }

  window.FlexStandIn = {
    flex: { Actions, Notifications },
    manager,
    calls,
    log: [],
    taskCanvasContainer,
    incomingCall,
    callsTo(api) { return calls.filter((c) => c.api === api).map((c) => c.args); },
  };
})();
