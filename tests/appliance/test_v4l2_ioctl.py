"""ioctl numbers follow from the ctypes structure sizes, as the kernel's _IOC macro computes them."""

import ctypes

import pytest

from appliance import v4l2_ioctl as k

LP64 = ctypes.sizeof(ctypes.c_long) == 8


@pytest.mark.skipif(not LP64, reason="expected values below are the x86_64/aarch64 ones")
def test_struct_sizes_and_ioctl_numbers_match_the_64_bit_kernel_headers():
    assert ctypes.sizeof(k.v4l2_event) == 136
    assert ctypes.sizeof(k.v4l2_buffer) == 88
    assert ctypes.sizeof(k.v4l2_format) == 208
    assert k.VIDIOC_DQEVENT == 0x80885659
    assert k.VIDIOC_DQBUF == 0xC0585611
    assert k.VIDIOC_QBUF == 0xC058560F
    assert k.VIDIOC_S_FMT == 0xC0D05605
    assert k.VIDIOC_QUERYBUF == 0xC0585609


@pytest.mark.skipif(LP64, reason="expected values below are the armv7 ones")
def test_struct_sizes_and_ioctl_numbers_match_the_32_bit_arm_kernel_headers():
    assert ctypes.sizeof(k.v4l2_event) == 120
    assert ctypes.sizeof(k.v4l2_buffer) == 68
    assert ctypes.sizeof(k.v4l2_format) == 204
    assert k.VIDIOC_DQBUF == 0xC0445611


def test_arch_independent_ioctl_numbers():
    assert ctypes.sizeof(k.v4l2_capability) == 104
    assert k.VIDIOC_QUERYCAP == 0x80685600
    assert k.VIDIOC_SUBSCRIBE_EVENT == 0x4020565A
    assert k.VIDIOC_REQBUFS == 0xC0145608
    assert k.VIDIOC_STREAMON == 0x40045612
    assert k.UVCIOC_SEND_RESPONSE == 0x40405501
    assert k.V4L2_PIX_FMT_MJPEG == 0x47504A4D


def test_buffer_offsets_of_the_fields_the_kernel_reads():
    assert k.v4l2_buffer.memory.offset == (60 if LP64 else 48)
    assert k.v4l2_buffer.m.offset == (64 if LP64 else 52)
    assert k.v4l2_buffer.length.offset == (72 if LP64 else 56)
