"""The background picker's API: the pictures "Replace" can use, and their thumbnails.

Picking one is an ordinary settings change (PUT /api/settings {"background": NAME}).
"""

from __future__ import annotations

from flask import Response, jsonify, url_for

from .api import bp, control


@bp.get("/backgrounds")
def list_backgrounds():
    listing = control().backgrounds()
    for choice in listing["choices"]:
        choice["thumbnail"] = url_for("api.background_thumbnail", name=choice["name"])
    return jsonify(listing)


@bp.get("/backgrounds/<name>.jpg")
def background_thumbnail(name: str):
    return Response(control().background_thumbnail(name), mimetype="image/jpeg")
