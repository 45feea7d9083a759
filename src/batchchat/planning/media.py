"""Media files for multimodal requests: the ``data_url`` and ``image_parts`` template filters.

Only files that are images, audio, video or PDF (judged by their extension) are ever
read, relative to the job spec's folder. A symbolic link is followed to its target and
the target is judged the same way, so ``evil.png → /etc/passwd`` is refused.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

import orjson

#: URLs sent as they are, never read
URL_PREFIXES = ("http://", "https://", "data:")
#: the media types a file may have to be read and sent
_MEDIA_PREFIXES = ("image/", "audio/", "video/", "application/pdf")


def data_url(value: Any, base_dir: str = ".") -> str:
    """A local media file (path relative to the spec) as a ``data:<type>;base64,`` URL.

    http(s) and data: URLs pass through unchanged, so one column may mix both.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        # str(None) would be looked up as a file named "None"
        raise ValueError(
            "data_url: the cell is empty (null); a row without a file needs a template "
            "such as {% if image %}...{% endif %}, or the image_parts filter, which skips nulls"
        )
    text = str(value)
    if text.startswith(URL_PREFIXES):
        return text
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    media_type = _media_type(path, text)
    try:
        payload = path.resolve(strict=True).read_bytes()
    except OSError as exc:
        raise ValueError(f"data_url: cannot read {path}: {exc.strerror}") from None
    return f"data:{media_type};base64,{base64.b64encode(payload).decode()}"


def image_parts(
    value: Any, detail: str | None = None, root: str | None = None, base_dir: str = "."
) -> list[dict[str, Any]]:
    """Images as ``image_url`` content parts, one per image, local files sent as data: URLs.

    ``value`` is a list of image URLs or local paths (null items skipped), JSON
    text of such a list, or one image; null gives no part. Relative paths start
    at ``root`` (itself relative to the spec) when given, else at the spec.
    """
    parts: list[dict[str, Any]] = []
    for image in _images_of(value):
        if root and not image.startswith(URL_PREFIXES):
            image = str(Path(root) / image)
        url = {"url": data_url(image, base_dir)}
        if detail is not None:
            url["detail"] = detail
        parts.append({"type": "image_url", "image_url": url})
    return parts


def _images_of(value: Any) -> list[str]:
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(
                f"image_parts: text that looks like a JSON list is not: {exc}"
            ) from None
    elif isinstance(value, str):
        return [value] if value.strip() else []
    if value is None:
        return []
    images = list(value) if isinstance(value, list | tuple) else [value]
    for image in images:
        if image is not None and not isinstance(image, str):
            raise ValueError(
                f"image_parts: expects image URLs or paths (a list, its JSON text, or one), "
                f"got {type(image).__name__} {image!r:.60}"
            )
    return [image for image in images if image]


def _media_type(path: Path, shown: str) -> str:
    """The media type of ``path`` and, for a link, of what it points to; ValueError otherwise."""
    for name in (path.name, _target_name(path)):
        media_type = mimetypes.guess_type(name)[0] or ""
        if not media_type.startswith(_MEDIA_PREFIXES):
            what = shown if name == path.name else f"{shown} (a link to {name})"
            raise ValueError(
                f"data_url: {what!r} is not an image, audio, video or PDF file "
                "(judged by its extension); other files are never read"
            )
    return mimetypes.guess_type(path.name)[0] or ""


def _target_name(path: Path) -> str:
    """The file name a path ends at once every link on the way is followed."""
    try:
        return path.resolve(strict=True).name
    except OSError:
        return path.name  # missing: reading it will say so
