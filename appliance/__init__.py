"""BlurCam: a Raspberry Pi USB webcam with on-device AI background blur."""

__version__ = "0.1.0"
