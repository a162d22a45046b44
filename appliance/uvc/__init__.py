"""The USB webcam: the configfs UVC gadget and the userspace that serves its video node."""

from appliance.uvc.device import UvcServer, find_uvc_node

__all__ = ["UvcServer", "find_uvc_node"]
