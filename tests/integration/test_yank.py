"""PEP 592 over the wire: `bastion project yank` while the server runs, seen by pip, uv and the pages."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import Dists, LiveServer, describe, html_anchors, installed, output


def test_yank_while_serving(live_server: LiveServer, dists: Dists, tmp_path: Path) -> None:
    server = live_server
    server.twine_ok(dists.demo)
    # Warm every cache of the running server before the CLI changes the database under it.
    result = server.pip_install(tmp_path / "before", "demo-pkg")
    assert result.returncode == 0 and installed(tmp_path / "before")["demo-pkg"] == "1.1.0", describe(result)
    assert all("data-yanked" not in attrs for attrs in html_anchors(server, "demo-pkg").values())

    result = server.cli_ok("project", "yank", "demo-pkg", "1.1.0", "--reason", "broken")
    assert "yanked demo-pkg 1.1.0" in result.stdout, describe(result)

    # The simple pages say so (PEP 592), for 1.1.0's files only.
    anchors = html_anchors(server, "demo-pkg")
    assert set(anchors) == {p.name for p in dists.demo if p.name.startswith("demo_pkg")}
    for filename, attrs in anchors.items():
        if "-1.1.0" in filename:
            assert attrs.get("data-yanked") == "broken", (filename, attrs)
        else:
            assert "data-yanked" not in attrs, (filename, attrs)
    files = {f["filename"]: f for f in server.simple_json("demo-pkg")["files"]}
    assert {name: f["yanked"] for name, f in files.items()} == {
        "demo_pkg-1.0.0-py3-none-any.whl": False, "demo_pkg-1.0.0.tar.gz": False,
        "demo_pkg-1.1.0-py3-none-any.whl": "broken", "demo_pkg-1.1.0.tar.gz": "broken",
    }
    with server.http() as client:
        info = client.get("/pypi/demo-pkg/json").json()
        release = client.get("/pypi/demo-pkg/1.1.0/json").json()
    assert info["info"]["version"] == "1.0.0"  # PyPI's "latest": the newest non-yanked release
    assert all(f["yanked"] and f["yanked_reason"] == "broken" for f in info["releases"]["1.1.0"])
    assert release["info"]["yanked"] is True and release["info"]["yanked_reason"] == "broken"

    # pip and uv skip the yanked release...
    result = server.pip_install(tmp_path / "pip", "demo-pkg")
    assert result.returncode == 0, describe(result)
    assert installed(tmp_path / "pip") == {"demo-pkg": "1.0.0"}, describe(result)
    result = server.uv_install(tmp_path / "uv", "demo-pkg")
    assert result.returncode == 0, describe(result)
    assert installed(tmp_path / "uv") == {"demo-pkg": "1.0.0"}, describe(result)

    # ... unless it is pinned exactly; the files stay downloadable and pip shows the reason.
    result = server.pip_install(tmp_path / "pinned", "demo-pkg==1.1.0")
    assert result.returncode == 0, describe(result)
    assert installed(tmp_path / "pinned") == {"demo-pkg": "1.1.0", "demo-dep": "0.1.0"}, describe(result)
    text = output(result)
    assert "yanked" in text and "broken" in text, describe(result)

    # Yanking twice is refused; un-yanking brings 1.1.0 back at once.
    again = server.cli("project", "yank", "demo-pkg", "1.1.0", "--reason", "broken")
    assert again.returncode != 0 and "already yanked" in output(again), describe(again)
    result = server.cli_ok("project", "yank", "demo-pkg", "1.1.0", "--undo")
    assert "un-yanked demo-pkg 1.1.0" in result.stdout, describe(result)
    assert all("data-yanked" not in attrs for attrs in html_anchors(server, "demo-pkg").values())
    result = server.pip_install(tmp_path / "after", "demo-pkg")
    assert result.returncode == 0, describe(result)
    assert installed(tmp_path / "after")["demo-pkg"] == "1.1.0", describe(result)
