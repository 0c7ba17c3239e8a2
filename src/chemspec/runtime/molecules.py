"""The data stage for language models: SMILES in, canonical molecules, SELFIES tokens and a vocabulary out.

Invalid or unencodable molecules are dropped and counted, never silently: the counts go to data.json.
The vocabulary is one token per symbol plus four specials, saved as a `transformers` fast tokenizer
that `AutoTokenizer.from_pretrained` loads, so a trained cell can be sampled without chemspec.
Canonicalisation and encoding, the costly part (minutes for all of MOSES on one core), run in chunks
over worker processes; the chunks come back in file order, so the output does not depend on the
number of workers.
"""

from __future__ import annotations

import csv
import gzip
import importlib.metadata
import io
import itertools
import multiprocessing
import os
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from chemspec.compiler.cells import DataCell
from chemspec.errors import RunError
from chemspec.runtime.io import sha256_file, sha256_tree, staged, write_bytes, write_json

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
CHUNK = 20_000
PAD, BOS, EOS, UNK = range(4)
SELFIES_SYMBOL = r"\[[^\]]*\]|\."
SMILES_SYMBOL = (r"\[[^\]]+\]|Br|Cl|Si|Se|se|@@|%\d{2}|[BCNOPSFIbcnops]|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$|\d")


def moses_path() -> Path:
    try:
        dist = importlib.metadata.distribution("molsets")
    except importlib.metadata.PackageNotFoundError:
        raise RunError("data.source.package 'moses' needs the molsets==0.3.1 wheel; install it with "
                       "`pip install --no-deps molsets==0.3.1` (`make` does this)") from None
    return Path(dist.locate_file("moses/dataset/data/train.csv.gz"))


def read_smiles(source: dict, limit: int | None, seed: int) -> list[str]:
    """The SMILES cell of each row of a package or file source, in file order, '' where a row's cell is
    empty; with `limit`, `limit` rows drawn by `seed` from the whole file, still in file order.

    A sample, not the head: MOSES's rows are not shuffled (its first 10,000 hold a third more
    sulfur-containing molecules than the whole set), nor need a user's file be. Reading all of MOSES
    takes about 2 s."""
    try:
        rows = _smiles(source)
    except UnicodeDecodeError:  # the file changed since validation read it whole
        where = f"data.source.file {source['file']}" if "file" in source else f"data.source {source}"
        raise RunError(f"{where} is not UTF-8 text; save it as UTF-8") from None
    if limit is None or limit >= len(rows):
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), limit, replace=False))
    return [rows[i] for i in keep]


def _smiles(source: dict) -> list[str]:
    """Every row validation counts (a line that is not blank), less a CSV's header."""
    if "package" in source:
        handle = io.TextIOWrapper(gzip.open(moses_path()), encoding="utf-8")
        rows = csv.reader(handle)
        next(rows)
        column = 0
    else:
        path = Path(source["file"])
        try:
            handle = open(path, encoding="utf-8-sig", newline="")  # -sig: a byte-order mark is not text
        except OSError as exc:
            raise RunError(f"data.source.file {path}: cannot read ({exc.strerror})") from None
        if source.get("column"):
            rows = csv.reader(handle)
            header = next((row for row in rows if row), [])  # as validation reads it: blank lines skipped
            if source["column"] not in header:
                raise RunError(f"data.source.file {path}: no column {source['column']!r}; "
                               f"the header has {header}; set data.source.column")
            column = header.index(source["column"])
        else:
            rows = ([line.split()[0]] if line.strip() else [] for line in handle)
            column = 0
    with handle:
        # A row of one blank cell is a blank line, which validation skips; a row with a comma is not.
        return [row[column].strip() if len(row) > column else "" for row in rows
                if len(row) > 1 or (row and row[0].strip())]


def _canonical(smiles: str) -> str | None:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    return Chem.MolToSmiles(mol) if mol is not None and mol.GetNumAtoms() > 0 else None


def _to_text(smiles: str, representation: str) -> str | None:
    if representation == "smiles":
        return smiles
    import selfies

    try:
        return selfies.encoder(smiles)
    except selfies.EncoderError:
        return None


def _prepare(raws: list[str], representation: str) -> list[tuple[str | None, str | None]]:
    """(canonical SMILES, text) of each raw SMILES; None where RDKit or the encoder refuses it."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    out = []
    for raw in raws:
        smiles = _canonical(raw)
        out.append((smiles, _to_text(smiles, representation) if smiles else None))
    return out


def prepared(raws: Iterator[str], representation: str) -> Iterator[tuple[str | None, str | None]]:
    """`_prepare` over all of `raws`, in order: in this process for one chunk, else in worker processes."""
    chunks = list(iter(lambda: list(itertools.islice(raws, CHUNK)), []))
    workers = min(len(chunks), len(os.sched_getaffinity(0)))
    if workers <= 1:
        results = [_prepare(chunk, representation) for chunk in chunks]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_prepare, chunks, itertools.repeat(representation)))
    return itertools.chain.from_iterable(results)


def symbols(text: str, representation: str) -> list[str]:
    return re.findall(SELFIES_SYMBOL if representation == "selfies" else SMILES_SYMBOL, text)


MAX_LENGTH = "model.sizes.<name>.max_length (one value, the same for every size)"


SKEWED = 0.05
"""Share of the molecules read that max_length may leave out before the data stage says the set is skewed to
small molecules."""


DROPPED = {"blank": "blank", "invalid_smiles": "no SMILES", "unencodable": "not encodable", "duplicates": "duplicates",
           "too_long": "longer than max_length"}
"""The counts in data.json of the rows the data stage left out, and how messages and the report name them."""


UNENCODABLE = ("the selfies package refuses wildcard atoms (*) and valences beyond its rules (hypervalent iodine, "
               "say); data.representation: smiles keeps them")
"""Why SELFIES leaves molecules out, and what keeps them."""


def dropped_text(counts: dict) -> str:
    """'442 longer than max_length, 3 duplicates': the rows left out, by cause; '' where none were."""
    return ", ".join(f"{counts[key]:,} {words}" for key, words in DROPPED.items()
                     if isinstance(counts.get(key), int) and counts[key])


def mostly_too_long(counts: dict) -> bool:
    """Whether molecules longer than max_length are most of those the data stage dropped."""
    dropped = sum(counts.get(key, 0) for key in ("invalid_smiles", "unencodable", "duplicates", "too_long"))
    return counts.get("too_long", 0) * 2 > dropped


def save_tokenizer(vocab: list[str], representation: str, out: Path) -> None:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {token: i for i, token in enumerate(vocab)}
    core = Tokenizer(models.WordLevel(vocab=ids, unk_token="[UNK]"))
    pattern = SELFIES_SYMBOL if representation == "selfies" else SMILES_SYMBOL
    core.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", BOS), ("[EOS]", EOS)])
    fast = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", bos_token="[BOS]",
                                   eos_token="[EOS]", unk_token="[UNK]")
    fast.save_pretrained(out)


def run_data(cell: DataCell) -> dict:
    rep = cell.representation or "selfies"
    limit = cell.source.get("max_molecules")
    raws = read_smiles(cell.source, limit, cell.seed)
    where = f"data.source.file {cell.source['file']}" if "file" in cell.source else "MOSES's training set"
    if limit and limit > len(raws):
        print(f"note: data.source.max_molecules ({limit:,}) is more than the {len(raws):,} molecules of {where}, "
              "so all of them are read; lower it to draw a sample", file=sys.stderr)
    present = [raw for raw in raws if raw]
    counts = {"read": len(raws), "blank": len(raws) - len(present), "invalid_smiles": 0, "unencodable": 0,
              "duplicates": 0, "too_long": 0}
    seen: set[str] = set()
    molecules: list[tuple[str, str, list[str]]] = []
    unread: list[str] = []
    unencodable: list[str] = []
    for raw, (smiles, text) in zip(present, prepared(iter(present), rep)):
        if smiles is None:
            counts["invalid_smiles"] += 1
            unread += [raw][: 3 - len(unread)] if raw not in unread else []
            continue
        if smiles in seen:
            counts["duplicates"] += 1
            continue
        seen.add(smiles)
        if not text:
            counts["unencodable"] += 1
            unencodable += [raw][: 3 - len(unencodable)]
            continue
        tokens = symbols(text, rep)
        if len(tokens) + 2 > cell.max_length:
            counts["too_long"] += 1
            continue
        molecules.append((smiles, text, tokens))
    first, lost = (", ".join(repr(raw[:60]) for raw in raws) for raws in (unread, unencodable))
    if counts["invalid_smiles"] * 2 > len(present):
        raise RunError(f"data.source: {counts['invalid_smiles']:,} of the {len(present):,} molecules read are no "
                       f"SMILES RDKit reads (the first: {first}), so the file is not what it seems: a file of SELFIES, "
                       "InChI or molfiles, a CSV read without data.source.column, or a file whose SMILES are not the "
                       "first field of a line gives this; check data.source.file and data.source.column, or drop the "
                       "broken lines from the file")
    if not molecules:
        fix = (f"most are longer than max_length ({cell.max_length} tokens, [BOS] and [EOS] included): raise "
               f"{MAX_LENGTH}" if mostly_too_long(counts) else
               f"SELFIES encodes none of them (the first: {lost}): {UNENCODABLE}" if counts["unencodable"] else
               "check the file and data.source.column")
        raise RunError(f"data.source: no valid molecules among the {counts['read']:,} read from {where} "
                       f"({dropped_text(counts)}); {fix}")
    if counts["invalid_smiles"]:
        print(f"note: {counts['invalid_smiles']:,} of the {len(present):,} molecules read are no SMILES RDKit reads "
              f"and are left out (the first: {first})", file=sys.stderr)
    if counts["unencodable"]:
        print(f"note: {counts['unencodable']:,} of the {len(present):,} molecules read have no SELFIES and are left "
              f"out (the first: {lost}); {UNENCODABLE}", file=sys.stderr)
    if counts["too_long"] >= SKEWED * len(present):
        print(f"note: {counts['too_long']:,} of the {len(present):,} molecules read "
              f"({counts['too_long'] / len(present):.0%}) are longer than max_length ({cell.max_length} tokens, "
              f"[BOS] and [EOS] included) and are left out, so the study trains and tests on the shorter ones; "
              f"raise {MAX_LENGTH} to keep them", file=sys.stderr)
    if fragments := sum("." in smiles for smiles, _, _ in molecules):
        print(f"note: {fragments:,} of the {len(molecules):,} molecules kept are several fragments (salts, mixtures, "
              "solvates: '.' in their SMILES), which the model learns as written; strip counter-ions and solvents "
              "first (RDKit's SaltRemover, or the largest fragment) where the study is of single molecules",
              file=sys.stderr)
    vocab = SPECIALS + sorted({t for _, _, tokens in molecules for t in tokens})
    index = {t: i for i, t in enumerate(vocab)}
    width = max(len(t) for _, _, t in molecules) + 2
    array = np.full((len(molecules), width), PAD, dtype=np.int16 if len(vocab) < 32000 else np.int32)
    for row, (_, _, tokens) in enumerate(molecules):
        ids = [BOS] + [index[t] for t in tokens] + [EOS]
        array[row, : len(ids)] = ids
    buffer = io.BytesIO()
    np.save(buffer, array)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["smiles", rep])
    writer.writerows((s, t) for s, t, _ in molecules)
    lengths = np.array([len(t) + 2 for _, _, t in molecules])
    with staged(cell.out_dir) as out:
        write_bytes(out / "tokens.npy", buffer.getvalue())
        write_bytes(out / "molecules.csv", table.getvalue().encode())
        (out / "tokenizer").mkdir()
        save_tokenizer(vocab, rep, out / "tokenizer")
        source = Path(cell.source["file"]) if "file" in cell.source else moses_path()
        info = {"kind": "smiles", "representation": rep, "count": len(molecules), "counts": counts,
                "source_sha256": sha256_file(source),
                "vocab_size": len(vocab),
                "tokens_per_molecule": {"mean": round(float(lengths.mean()), 3), "max": int(lengths.max())},
                "sha256": {"tokens.npy": sha256_file(out / "tokens.npy"),
                           "molecules.csv": sha256_file(out / "molecules.csv"),
                           "tokenizer": sha256_tree(out / "tokenizer")}}
        write_json(out / "data.json", info)
    return info
