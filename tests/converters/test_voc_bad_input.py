"""Bad VOC input: every problem is a located row in the report, the rest is converted, nothing crashes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segpipe.converters.coco import read_coco
from segpipe.core.errors import AnnotationError
from segpipe.converters.report import EXIT_SKIPPED_ERRORS, StrictModeError
from segpipe.converters.voc import convert_voc, parse_voc_xml
from tests.converters.test_voc import codes, labelimg_xml, rows, write_image, write_pair

SECRET = "TOP-SECRET-7c1f9e"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE annotation [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><object><name>&lol9;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>
"""


def external_entity_xml(secret_file: Path) -> bytes:
    return (f'<?xml version="1.0"?>\n<!DOCTYPE annotation [ <!ENTITY xxe SYSTEM "file://{secret_file}"> ]>\n'
            f"<annotation><filename>&xxe;</filename><object><name>&xxe;</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
            f"<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>\n").encode()


def by_file(out: Path, name: str) -> list[tuple[str, str]]:
    return sorted((r["severity"], r["code"]) for r in rows(out) if Path(r["file"]).name == name)


def test_parse_refuses_entities_and_malformed_documents(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET, encoding="utf-8")
    for data, code in [(BILLION_LAUGHS, "xml_dtd_refused"), (external_entity_xml(secret), "xml_dtd_refused"),
                       (b"<annotation><object><name>cat</name>", "malformed_xml"), (b"", "malformed_xml"),
                       (b"<coco><images/></coco>", "not_voc"), (b"\xff\xfe<\x00a\x00", "malformed_xml")]:
        with pytest.raises(AnnotationError) as info:
            parse_voc_xml(data, path="bad.xml")
        assert info.value.code == code and info.value.path == "bad.xml"
        assert SECRET not in str(info.value)


def test_bad_documents_become_rows_and_good_ones_convert(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET, encoding="utf-8")
    write_pair(src, "good")
    for stem, data in [("laughs", BILLION_LAUGHS), ("xxe", external_entity_xml(secret)), ("truncated", labelimg_xml(filename="truncated.jpg", width=40,
        height=30, objects=[{"name": "cat", "box": (1, 1, 5, 5)}])[:150])]:
        write_image(src / f"{stem}.jpg", width=40, height=30)
        (src / f"{stem}.xml").write_bytes(data)
    report = convert_voc(src, out, workers=1)
    assert report.exit_code() == EXIT_SKIPPED_ERRORS
    assert [i["file_name"] for i in read_coco(out / "instances.json")["images"]] == ["good.jpg"]
    assert by_file(out, "laughs.xml") == [("error", "xml_dtd_refused")]
    assert by_file(out, "xxe.xml") == [("error", "xml_dtd_refused")]
    assert by_file(out, "truncated.xml") == [("error", "malformed_xml")]
    assert "line" in next(r["message"] for r in rows(out) if r["code"] == "malformed_xml")
    for path in out.iterdir():  # the external entity's target is never read into any output
        assert SECRET not in path.read_text(encoding="utf-8")


def test_external_entity_target_is_never_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import io

    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET, encoding="utf-8")
    src = tmp_path / "src"
    write_image(src / "xxe.jpg", width=40, height=30)
    (src / "xxe.xml").write_bytes(external_entity_xml(secret))
    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(os.fspath(file) if not isinstance(file, int) else str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)
    convert_voc(src, tmp_path / "out", workers=1)
    assert any(p.endswith("xxe.xml") for p in opened)  # the spy does see the files that are read
    assert str(secret) not in opened


@pytest.mark.parametrize(("box", "code", "fragment", "clipped"), [
    (("abc", 1, 5, 5), "invalid_object", "bndbox.xmin: not a number: 'abc'", False),
    (("nan", 1, 5, 5), "invalid_object", "bndbox.xmin: not a number: 'nan'", False),
    ((1, 1, "1e999", 5), "invalid_object", "bndbox.xmax: not a finite number", False),
    ((1, 1, "", 5), "invalid_object", "bndbox.xmax: missing", False),
    ((8, 1, 4, 5), "inverted_box", "max < min (xmin=8, ymin=1, xmax=4, ymax=5)", False),
    ((3, 3, 3, 9), "empty_box", "zero width or height", False),
    ((50, 1, 60, 5), "empty_box", "inside the 40×30 image", True),
])
def test_bad_box_drops_the_whole_image_with_a_located_row(tmp_path: Path, box: tuple, code: str, fragment: str, clipped: bool) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    write_pair(src, "bad", objects=[{"name": "dog", "box": (1, 1, 5, 5)}, {"name": "cat", "box": box}])
    write_pair(src, "good")
    convert_voc(src, out, workers=1)
    coco = read_coco(out / "instances.json")
    assert [i["file_name"] for i in coco["images"]] == ["good.jpg"]
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]
    (err,) = [r for r in rows(out) if r["severity"] == "error"]
    assert err["code"] == code and Path(err["file"]).name == "bad.xml"
    assert err["message"].startswith("object[1] ('cat'): ") and fragment in err["message"]
    assert by_file(out, "bad.xml") == [("error", code), ("info", "image_skipped")] + ([("warning", "box_clipped")] if clipped else [])


def test_clipping_values(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    write_pair(src, "a", objects=[{"name": "person", "box": (10.5, -207.7, 45, 20)}])
    report = convert_voc(src, out, workers=1)
    assert not report.has_errors
    (ann,) = read_coco(out / "instances.json")["annotations"]
    assert ann["bbox"] == [10.5, 0.0, 29.5, 20.0] and ann["area"] == 29.5 * 20.0
    (row,) = rows(out)
    assert (row["severity"], row["code"]) == ("warning", "box_clipped")
    assert "(10.5, -207.7, 45, 20)" in row["message"] and "[10.5, 0, 40, 20]" in row["message"]


def test_empty_tags_are_absent_with_one_info_row(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    write_image(src / "a.jpg", width=40, height=30)
    (src / "a.xml").write_bytes(
        b"<annotation><filename>a.jpg</filename><size><width>40</width><height>30</height><depth/></size>"
        b"<object><name>bottle</name><pose/><truncated/><difficult/><bndbox><xmin>1.25</xmin><xmax>5</xmax>"
        b"<ymin>2</ymin><ymax>6</ymax></bndbox></object><object><name>cup</name><difficult>maybe</difficult>"
        b"<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>")
    convert_voc(src, out, workers=1)
    anns = read_coco(out / "instances.json")["annotations"]
    assert [a["attributes"] for a in anns] == [{"difficult": False}, {"difficult": False}]
    assert anns[0]["bbox"] == [1.25, 2.0, 3.75, 4.0]
    assert codes(out) == [("info", "empty_tag"), ("warning", "invalid_flag")]
    empty = next(r for r in rows(out) if r["code"] == "empty_tag")["message"]
    assert "<depth/> ×1" in empty and "<difficult/> ×1" in empty and "<pose/> ×1" in empty
    assert "object[1].difficult: expected 0 or 1, got 'maybe'" in next(r for r in rows(out) if r["code"] == "invalid_flag")["message"]


def test_filename_with_path_is_never_followed(tmp_path: Path) -> None:
    src, out = tmp_path / "data" / "src", tmp_path / "out"
    write_image(tmp_path / "data" / "victim.jpg", width=99, height=77)  # what '../victim.jpg' would open
    write_image(src / "a.jpg", width=40, height=30)
    (src / "a.xml").write_bytes(labelimg_xml(filename="../victim.jpg", width=99, height=77, objects=[{"name": "cat", "box": (1, 1, 5, 5)}], path="/etc/passwd"))
    convert_voc(src, out, workers=1)
    (image,) = read_coco(out / "instances.json")["images"]
    assert (image["file_name"], image["width"], image["height"]) == ("a.jpg", 40, 30)
    assert codes(out) == [("warning", "filename_path"), ("warning", "size_mismatch")]
    assert "'../victim.jpg'" in next(r for r in rows(out) if r["code"] == "filename_path")["message"]


def test_missing_and_corrupt_images(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    (src).mkdir()
    (src / "lost.xml").write_bytes(labelimg_xml(filename="lost.jpg", width=40, height=30, objects=[{"name": "cat", "box": (9, 1, 5, 5)}]))
    (src / "broken.xml").write_bytes(labelimg_xml(filename="broken.png", width=40, height=30, objects=[{"name": "cat", "box": (1, 1, 5, 5)}]))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (src / "empty.xml").write_bytes(labelimg_xml(filename="empty.jpg", width=40, height=30, objects=[]))
    (src / "empty.jpg").write_bytes(b"")
    write_pair(src, "good")
    report = convert_voc(src, out, workers=1)
    assert report.exit_code() == EXIT_SKIPPED_ERRORS
    assert [i["file_name"] for i in read_coco(out / "instances.json")["images"]] == ["good.jpg"]
    # The XML of a missing image is still checked against its own <size>, so its inverted box is located now.
    assert by_file(out, "lost.xml") == [("error", "inverted_box"), ("error", "missing_image")]
    assert by_file(out, "broken.png") == [("error", "unreadable_image")]
    assert by_file(out, "empty.jpg") == [("error", "unreadable_image")]
    assert "broken.xml is skipped" in next(r for r in rows(out) if r["code"] == "unreadable_image" and "broken" in r["file"])["message"]


def test_two_xmls_for_one_image(tmp_path: Path) -> None:
    ann, img, out = tmp_path / "ann", tmp_path / "img", tmp_path / "out"
    for sub in ("p", "q"):
        (ann / sub).mkdir(parents=True)
        (ann / sub / "x.xml").write_bytes(labelimg_xml(filename="x.jpg", width=40, height=30, objects=[{"name": sub, "box": (1, 1, 5, 5)}]))
    write_image(img / "x.jpg", width=40, height=30)
    convert_voc(ann, out, images=img, workers=1)
    coco = read_coco(out / "instances.json")
    # The skipped XML is never read, so its label does not become a category.
    assert len(coco["images"]) == 1 and [c["name"] for c in coco["categories"]] == ["p"]
    assert [coco["categories"][a["category_id"] - 1]["name"] for a in coco["annotations"]] == ["p"]
    (row,) = rows(out)
    assert (row["code"], Path(row["file"]).parent.name) == ("duplicate_annotation", "q")


@pytest.mark.skipif(os.uname().sysname == "Darwin", reason="macOS refuses non-UTF-8 file names")
def test_non_utf8_file_names_are_refused_with_a_row(tmp_path: Path) -> None:
    """Refused at conversion (reports, Parquet and OpenCV downstream need UTF-8), each with a located row."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    stem = os.fsdecode(b"caf\xe9")
    try:
        write_image(src / f"{stem}.jpg", width=40, height=30)
    except (OSError, UnicodeEncodeError):
        pytest.skip("file system refuses non-UTF-8 names")
    (src / f"{stem}.xml").write_bytes(labelimg_xml(filename="caf.jpg", width=40, height=30, objects=[{"name": "cat", "box": (1, 1, 5, 5)}]))
    write_image(src / (os.fsdecode(b"lonely_\xff") + ".png"), width=4, height=4, fmt="PNG")
    write_image(src / "ok.jpg", width=40, height=30)
    (src / "ok.xml").write_bytes(labelimg_xml(filename="ok.jpg", width=40, height=30, objects=[{"name": "cat", "box": (1, 1, 5, 5)}]))
    convert_voc(src, out, workers=1)
    coco = read_coco(out / "instances.json")
    assert [im["file_name"] for im in coco["images"]] == ["ok.jpg"]
    report = (out / "conversion_report.csv").read_text(encoding="utf-8")
    assert "caf\\udce9.jpg" in report and "caf\\udce9.xml" in report and "lonely_\\udcff.png" in report
    assert codes(out) == [("error", "non_utf8_name")] * 3


def test_strict_stops_at_the_first_error_and_keeps_the_report(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    write_pair(src, "a")
    write_pair(src, "b", objects=[{"name": "cat", "box": (9, 1, 5, 5)}])
    write_pair(src, "c", objects=[{"name": "cat", "box": ("x", 1, 5, 5)}])
    with pytest.raises(StrictModeError, match="b.xml.*inverted_box"):
        convert_voc(src, out, strict=True, workers=1)
    assert not (out / "instances.json").exists()
    assert codes(out) == [("error", "inverted_box")]


def test_utf16_documents_take_the_defusedxml_path(tmp_path: Path) -> None:
    # "<!DOCTYPE" is not the same bytes in UTF-16, so the byte check cannot vouch for such files:
    # they go through defusedxml, which still refuses the DTD.
    laughs16 = BILLION_LAUGHS.decode().replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>').encode("utf-16")
    with pytest.raises(AnnotationError) as info:
        parse_voc_xml(laughs16, path="l16.xml")
    assert info.value.code == "xml_dtd_refused"
    good16 = labelimg_xml(filename="a.jpg", width=40, height=30, objects=[{"name": "chat noir", "box": (1, 2, 3, 4)}]).decode().encode("utf-16")
    assert [(o.name, o.xmax) for o in parse_voc_xml(good16, path="g16.xml").objects] == [("chat noir", 3.0)]


def test_declared_latin1_and_doctype_text_in_a_comment() -> None:
    latin1 = ('<?xml version="1.0" encoding="ISO-8859-1"?><annotation><object><name>café</name>'
              '<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>').encode("latin-1")
    assert parse_voc_xml(latin1, path="l1.xml").objects[0].name == "café"
    commented = b"<annotation><!-- no <!DOCTYPE here, only text --><filename>a.jpg</filename></annotation>"
    assert parse_voc_xml(commented, path="c.xml").filename == "a.jpg"
    with pytest.raises(AnnotationError, match="undefined entity"):
        parse_voc_xml(b"<annotation><filename>&xxe;</filename></annotation>", path="u.xml")
