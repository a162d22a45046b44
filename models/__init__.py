"""BlurCam models: build and evaluation code (the .tflite files sit beside it)."""
