"""The HTTP gateway: TaskRouter callbacks in, Temporal signals out."""
