"""The sequence (flair, t1, t1ce, t2 or nothing) a DICOM series' SeriesDescription and ProtocolName name."""

from __future__ import annotations

import re

_NOT_STRUCTURAL = re.compile(
    r"(?<![a-z0-9])(dwi|diffusion|adc|trace|dti|tensor|swi|swan|t2\s*\*|t2star|t2\s+star|gre\s*t2|hemo|perf\w*|dsc|dce|pwi|"
    r"asl|mra|tof|angio|mip|localizer|localiser|scout|survey|3\s*plane|spectro\w*|mrs|fmri|bold|cbf|cbv|"
    r"sub(traction)?|fa|mapping|map)(?![a-z0-9])")
_FLAIR = re.compile(r"\b(flair|t2\s*flair|t2f|dark\s*fluid|darkfluid|tirm|fluid\s*att\w*)\b")
_PRE = re.compile(r"\b(pre|precontrast|pre\s*contrast|pre\s*(gd|gad|c)|w\s*o|wo|without|non\s*contrast|"
                  r"no\s*contrast|nat\w*|native|plain)\b")
_POST = re.compile(r"(\+\s*c\b|\bc\s*\+|\+\s*gd|\bgd\b|\bgad\w*|\bgado\w*|\bcontrast\b|\bpost(?!er)\w*|\bce\b|\bt1ce\b|"
                   r"\bt1c\b|\bt1gd\b|\bt1\s*c\b|\bwith\s*contrast\b|\bw\s*contrast\b|\benhanc\w*|\bmultihance\b|"
                   r"\bdotarem\b|\bgadavist\b|\bmagnevist\b|\bprohance\b)")
_T1 = re.compile(r"(\bt1\w*|\bmprage\b|\bmp\s*rage\b|\bspgr\b|\bfspgr\b|\bbravo\b|\btfe\b|\bvibe\b|\bt1n\b|"
                 r"\bflash\b|\bse\s*t1\b)")
_T2 = re.compile(r"\b(t2|t2w|t2\s*w|t2\s*tse|t2\s*fse|tse\s*t2|fse\s*t2|t2\s*se|t2w\w*)\b")


def normalise_text(text: str) -> str:
    """Lower case; separators (``_-./,()``) become spaces; ``+`` and ``*`` are kept."""
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9+*]+", " ", text.lower())).strip()


def guess_sequence(description: str, protocol: str = "") -> tuple[str | None, str]:
    """Guess flair, t1, t1ce or t2 from a SeriesDescription and ProtocolName.

    The description is tried first, then the protocol. Diffusion, susceptibility (T2*), perfusion, angiography,
    localisers, maps and subtractions are recognised and guessed as nothing. T1 with a contrast word
    ("post", "+C", "C+", "Gd", "gad", "contrast", "CE", "enhanced") and no "pre"/"without" word is T1CE.

    Returns:
        (sequence or None, the reason in a few words).
    """
    for field_name, raw in (("description", description), ("protocol", protocol)):
        text = normalise_text(raw or "")
        if not text:
            continue
        if _NOT_STRUCTURAL.search(text):
            what = _NOT_STRUCTURAL.search(text).group(0)  # type: ignore[union-attr]
            return None, f"{field_name} names {what!r}: not a structural sequence"
        t1 = _T1.search(text)
        if _FLAIR.search(text) and not (t1 and t1.group(0).startswith("t1")):  # GE's "T1 FLAIR" is a T1
            return "flair", f"{field_name} says FLAIR"
        post = _POST.search(text)
        pre = _PRE.search(text)
        if t1 or (post and not _T2.search(text) and re.search(r"\b(t1c|t1ce|t1gd)\b", text)):
            if post and not pre:
                return "t1ce", f"{field_name} says T1 with contrast ({post.group(0).strip()!r})"
            return "t1", f"{field_name} says T1" + (" before contrast" if pre else "")
        if _T2.search(text):
            return "t2", f"{field_name} says T2"
    return None, "no sequence named in description or protocol"
