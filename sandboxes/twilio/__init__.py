"""A local stand-in for the slice of Twilio this product uses: TaskRouter, Flex Configuration, Flex token validation.

Start it in-process with `TwilioSandbox`, or from the shell with `flexsf sandbox twilio`.
"""

from sandboxes.twilio.sandbox import TwilioSandbox

__all__ = ["TwilioSandbox"]
