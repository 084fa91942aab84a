"""An export (``services.reports.exports.Export``) as an HTTP answer: a download named after its title."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Response

from services.reports.exports import Export


def export_response(export: Export) -> Response:
    """The file, with ``Content-Disposition: attachment`` and its UTF-8 file name (RFC 6266)."""
    return Response(
        export.content,
        media_type=export.media_type,
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(export.filename, safe='')}"},
    )
