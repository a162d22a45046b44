"""Shared pictures for the core pipeline tests: a demo scene whose true person mask is known."""

from __future__ import annotations

import pytest

from appliance.sources.demo import DemoSource


@pytest.fixture(scope="session")
def portrait():
    """A 1280x720 photo of a person (Grace Hopper) in front of a detailed bookshelf, with the
    true person mask, as (rgb, truth)."""
    demo = DemoSource(paced=False)
    demo.start(1280, 720, 30, (256, 256))
    return demo.render_with_truth(1.0)
