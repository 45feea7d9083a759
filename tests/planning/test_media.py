"""The media filters read only media files, and a link only when its target is one."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from batchchat.planning.media import data_url, image_parts

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8


def test_a_local_image_becomes_a_data_url(tmp_path: Path) -> None:
    (tmp_path / "cat.png").write_bytes(PNG)
    url = data_url("cat.png", base_dir=str(tmp_path))
    assert url == "data:image/png;base64," + base64.b64encode(PNG).decode()


def test_a_link_to_a_file_that_is_not_media_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2")
    (tmp_path / "evil.png").symlink_to(secret)
    with pytest.raises(ValueError, match=r"'evil\.png \(a link to secret\.txt\)' is not an image"):
        data_url("evil.png", base_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not an image"):
        image_parts(["evil.png"], base_dir=str(tmp_path))


def test_a_link_to_an_image_is_read_from_its_target(tmp_path: Path) -> None:
    (tmp_path / "real.png").write_bytes(PNG)
    (tmp_path / "alias.png").symlink_to(tmp_path / "real.png")
    assert data_url("alias.png", base_dir=str(tmp_path)).endswith(base64.b64encode(PNG).decode())


def test_a_missing_file_and_a_non_media_name_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        data_url("nowhere.png", base_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not an image"):
        data_url("/etc/passwd", base_dir=str(tmp_path))


def test_urls_pass_through_unread() -> None:
    assert data_url("https://example.com/a.txt") == "https://example.com/a.txt"
