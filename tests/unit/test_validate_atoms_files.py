"""`chemspec validate` counts the structures of an atoms file, on the real shared files, and refuses a study
whose sizes the file cannot fill, before any stage runs."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest

from chemspec.errors import RunError
from chemspec.runtime.atoms_files import check_sample, count_structures, load_file
from chemspec.specs.data import FINITE
from tests.conftest import tiny_study, write_spec

FILES = [("md17/ethanol_ccsd_t-train.npz", "md17", 1000), ("md17/md17_ethanol_first2000.npz", "md17", 2000),
         ("ani/ani1x_n5.hdf5", "ani1x", 8), ("ani/ani2x_minimal.hdf5", "ani2x", 5706), ("extxyz/rmd17_ethanol_reduced_100.xyz", "extxyz", 100),
         ("extxyz/md17_ethanol_sampledata_2000.xyz", "extxyz", 2000)]


def atoms_study(tmp_path, file: str, format: str, sizes: list[int], validation: int = 100, test: int = 100):
    study = tiny_study(**{"data.kind": "atoms", "data.source": {"file": file, "format": format},
                          "data.sizes": sizes, "data.validation": validation, "data.test": test,
                          "model": {"family": "painn", "widths": [8], "depths": [1]},
                          "hpo.tpe.model_size": "w8d1", "hpo.tpe.data_size": sizes[0]})
    return write_spec(tmp_path / "study.yaml", study)


@pytest.mark.parametrize("file,format,frames", FILES, ids=[f[0] for f in FILES])
def test_the_count_is_what_the_loader_reads(shared, file, format, frames):
    assert count_structures(shared / file, format) == frames
    assert load_file(shared / file, format, "eV", "Angstrom")[1]["read"] == frames


def test_a_compressed_extxyz_file_is_counted_as_ase_reads_it(shared, tmp_path):
    packed = tmp_path / "ethanol.xyz.gz"
    packed.write_bytes(gzip.compress((shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz").read_bytes()))
    assert count_structures(packed, "extxyz") == load_file(packed, "extxyz", "eV", "Angstrom")[1]["read"] == 100


def test_structures_without_a_finite_energy_are_not_counted(shared):
    """ANI-1x's partial levels of theory are mostly NaN: count what the loader can keep."""
    path, level = shared / "ani" / "ani1x_n5.hdf5", "ccsd(t)_cbs.energy"
    counts = load_file(path, "ani1x", "Hartree", "Angstrom", level, "wb97x_dz.forces")[1]
    assert counts["dropped_nonfinite"] > 0
    assert count_structures(path, "ani1x", level) == counts["kept"] == 6


def test_an_hdf5_file_without_one_finite_energy_says_so_not_that_it_holds_none(shared, tmp_path):
    import shutil

    import h5py

    path = tmp_path / "ani.hdf5"
    shutil.copy(shared / "ani" / "ani1x_n5.hdf5", path)
    with h5py.File(path, "r+") as handle:
        for name in handle:
            handle[name]["wb97x_dz.energy"][...] = np.nan
    with pytest.raises(RunError, match=rf"ani1x file {re.escape(str(path))} holds 8 structures, none with finite "
                                       r"'wb97x_dz\.energy' \(NaN, inf or beyond float32's range in every one\)"):
        count_structures(path, "ani1x")


def test_an_ase_database_is_counted_by_its_rows(shared, tmp_path):
    import ase.db
    import ase.io

    with ase.db.connect(tmp_path / "ethanol.db") as db:
        for atoms in ase.io.read(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz", index=":12"):
            db.write(atoms)
    assert count_structures(tmp_path / "ethanol.db", "asedb") == 12
    assert load_file(tmp_path / "ethanol.db", "asedb", "eV", "Angstrom")[1]["read"] == 12


@pytest.mark.parametrize("file,format,frames", FILES, ids=[f[0] for f in FILES])
def test_validate_refuses_sizes_the_file_cannot_fill_naming_file_count_need_and_fix(cli, shared, tmp_path, file,
                                                                                   format, frames):
    held_out = max(1, frames // 10)
    largest = frames - 2 * held_out
    spec = atoms_study(tmp_path, str(shared / file), format, [largest // 2, largest], held_out, held_out)
    assert cli("validate", str(spec)).code == 0
    spec = atoms_study(tmp_path, str(shared / file), format, [largest // 2, largest + 1], held_out, held_out)
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if text.startswith("  sizes:"))
    for verb in ("validate", "compile"):
        result = cli(verb, str(spec), cwd=tmp_path)
        assert result.code == 2 and "Traceback" not in result.err, result.err
        assert (f"study.yaml:{line}:3: data.sizes: the largest size ({largest + 1}) plus validation ({held_out}) and "
                f"test ({held_out}) needs {frames + 1} but data.source.file '{shared / file}' has {frames}"
                f"{FINITE.get(format, '')}; lower the sizes or read more structures") in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"], "compile wrote nothing"


def test_the_count_is_reported_with_the_studys_other_problems(cli, shared, tmp_path):
    spec = atoms_study(tmp_path, str(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz"), "extxyz", [200, 400])
    spec.write_text(spec.read_text().replace("  accelerator: cpu\n", "  accelerator: cpu\n  devices: 2\n"))
    result = cli("validate", str(spec))
    assert result.code == 2 and "2 errors" in result.err, result.err
    assert "training.devices: model.family 'painn' trains on one device" in result.err
    assert "needs 600 but data.source.file" in result.err and "has 100; lower the sizes" in result.err


def test_a_file_of_another_format_is_named_without_a_traceback(cli, shared, tmp_path):
    spec = atoms_study(tmp_path, str(shared / "md17" / "md17_ethanol_first2000.npz"), "extxyz", [200, 400])
    result = cli("validate", str(spec))
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert (f"data.source.file: extxyz file {shared / 'md17' / 'md17_ethanol_first2000.npz'} is unreadable or "
            "truncated (frame 0 does not start with its atom count); check that data.source.format matches the "
            "file") in result.err


@pytest.mark.parametrize("cut", ["last atom", "last atom and newline", "comment onwards"])
def test_a_truncated_extxyz_file_is_refused_naming_the_frame(cli, shared, tmp_path, cut):
    lines = (shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz").read_text().splitlines(keepends=True)
    keep = {"last atom": len(lines) - 1, "last atom and newline": len(lines) - 1, "comment onwards": len(lines) - 10}
    text = "".join(lines[:keep[cut]])
    path = tmp_path / "cut.xyz"
    path.write_text(text.rstrip("\n") if cut == "last atom and newline" else text)
    held = {"last atom": 8, "last atom and newline": 8, "comment onwards": 0}[cut]
    spec = atoms_study(tmp_path, str(path), "extxyz", [40, 80], 10, 10)
    result = cli("validate", str(spec))
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert (f"data.source.file: extxyz file {path} is unreadable or truncated (frame 99 declares 9 atoms but holds "
            f"{held}); check that data.source.format matches the file and that the file is complete") in result.err


def test_a_frame_short_of_an_atom_is_named_not_the_frame_after_it(shared, tmp_path):
    lines = (shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz").read_bytes().splitlines(keepends=True)
    del lines[339]  # frame 30's eighth atom (11 lines a frame)
    path = tmp_path / "short.xyz"
    path.write_bytes(b"".join(lines))
    with pytest.raises(RunError, match=r"frame 30 declares 9 atoms but holds 8 \(line 341 is no atom's: '9'\)"):
        count_structures(path, "extxyz")


def test_an_extxyz_file_that_goes_on_after_a_blank_line_is_refused_where_ase_would_drop_the_rest(cli, shared,
                                                                                                tmp_path):
    """ASE reads no frame after a blank line: `cat` of files that end in an empty line lost half of them."""
    lines = (shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz").read_text().splitlines(keepends=True)
    joined, padded = tmp_path / "joined.xyz", tmp_path / "padded.xyz"
    joined.write_text("".join(lines[:550]) + "\n" + "".join(lines[550:]))
    padded.write_text("".join(lines) + "\n  \n\n")
    said = (f"extxyz file {joined}: line 552 holds text after the blank line 551, which ends the 50 frames ASE reads, "
            "so the frames after it would be dropped without a word; remove the blank line")
    result = cli("validate", str(atoms_study(tmp_path, str(joined), "extxyz", [10, 20], 10, 10)))
    assert result.code == 2 and f"data.source.file: {said}" in result.err and "Traceback" not in result.err, result.err
    with pytest.raises(RunError, match=re.escape(said)):  # the data stage, run on a file edited after compile
        load_file(joined, "extxyz", "kcal/mol", "Angstrom")
    assert load_file(padded, "extxyz", "kcal/mol", "Angstrom")[1]["kept"] == 100, "blank lines at the end are no text"


@pytest.mark.parametrize("edit,said", [
    (lambda line: "Xx" + line[1:], "KeyError: 'Xx'"),
    (lambda line: line.replace(" ", " 0.1.", 1), "could not convert string to float"),
    (lambda line: "1" + line[1:], r"KeyError: '1': an atom's line starts with its element symbol \(H, C, O\), not "
     "its atomic number"),
    (lambda line: "OW" + line[1:], "KeyError: 'Ow': 'Ow', as ASE reads the symbol, is no element; write element "
     "symbols, not atom types"),
])
def test_a_frame_that_ase_cannot_parse_is_named_by_its_index(shared, tmp_path, edit, said):
    lines = (shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz").read_text().splitlines(keepends=True)
    lines[5 * 11 + 3] = edit(lines[5 * 11 + 3])  # frame 5's second atom (11 lines a frame)
    for name in ("typo.xyz", "typo.xyz.gz"):
        path = tmp_path / name
        text = "".join(lines).encode()
        path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
        with pytest.raises(RunError, match=rf"extxyz file .*{re.escape(name)} frame 5 cannot be read \(.*{said}.*\); "
                                           r"correct or remove that frame"):
            load_file(path, "extxyz", "kcal/mol", "Angstrom")


def test_a_byte_that_is_no_utf8_text_is_named_by_its_line_not_blamed_on_frame_0(shared, tmp_path):
    lines = (shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz").read_bytes().split(b"\n")
    lines[551] += b" caf\xe9"  # frame 50's comment line, in Latin-1
    path = tmp_path / "latin1.xyz"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(RunError, match=r"latin1\.xyz: line 552 is not utf-8 text \(invalid continuation byte: byte "
                                       r"b'\\xe9'\); save the file as UTF-8, or remove that character"):
        load_file(path, "extxyz", "kcal/mol", "Angstrom")
    lines[551] = lines[551][:-5]
    lines[12] += b" caf\xe9"  # frame 1's comment line: in the text validate's read of frame 0 decodes
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(RunError, match=r"latin1\.xyz: line 13 is not utf-8 text"):
        check_sample(path, "extxyz")


def test_a_byte_order_mark_is_named_not_taken_for_a_missing_atom_count(cli, shared, tmp_path):
    path = tmp_path / "bom.xyz"
    path.write_bytes(b"\xef\xbb\xbf" + (shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz").read_bytes())
    result = cli("validate", str(atoms_study(tmp_path, "bom.xyz", "extxyz", [20, 40], 10, 10)), cwd=tmp_path)
    assert result.code == 2 and ("bom.xyz starts with a UTF-8 byte-order mark, which ASE does not read; "
                                 "remove the marks") in result.err, result.err
    joined = tmp_path / "joined.xyz"
    joined.write_bytes((shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz").read_bytes() + path.read_bytes())
    with pytest.raises(RunError, match=r"joined\.xyz: line 1101 \(frame 100, as where files were joined with `cat`\) "
                                       r"starts with a UTF-8 byte-order mark"):
        count_structures(joined, "extxyz")


def _water_npz(path, **replace):
    arrays = {"z": np.array([8, 1, 1]), "R": np.zeros((600, 3, 3)), "E": np.zeros((600, 1)), "F": np.zeros((600, 3, 3))}
    np.savez(path, **{key: value for key, value in {**arrays, **replace}.items() if value is not None})


def _water_xyz(path, header: str = 'Properties=species:S:1:pos:R:3:forces:R:3 energy=-14.2 pbc="F F F"'):
    frame = f"3\n{header}\n" + "".join(f"{z} {x} 0 0 0 0 0\n" for z, x in (("O", 0.0), ("H", 0.96), ("H", -0.96)))
    path.write_text(frame * 600)


@pytest.mark.parametrize("format,keys", [("md17", "R, z, E, F"), ("rmd17", "coords, nuclear_charges, energies, forces")])
def test_energy_or_forces_keys_for_an_npz_format_are_refused_not_ignored(cli, tmp_path, format, keys):
    """MD17 and rMD17 archives have fixed array names: a key given there was read by nothing, yet entered the
    data cell's identity."""
    _water_npz(tmp_path / "traj.npz")
    study = tiny_study(**{"data.kind": "atoms", "data.source": {"file": "traj.npz", "format": format,
                                                                "energy_key": "energies", "forces_key": "F"},
                          "data.sizes": [100, 200], "model": {"family": "painn", "widths": [8], "depths": [1]},
                          "hpo.tpe.model_size": "w8d1", "hpo.tpe.data_size": 100})
    result = cli("validate", str(write_spec(tmp_path / "study.yaml", study)), cwd=tmp_path)
    assert result.code == 2 and "Traceback" not in result.err
    assert (f"data.source.energy_key: applies to extxyz, asedb, ani1x and ani2x files; an {format} npz holds its "
            f"arrays under fixed keys ({keys}): remove energy_key and forces_key") in result.err, result.err
    study["data"]["source"].update(energy_key="energy", forces_key="forces")  # the defaults, spelled out
    result = cli("validate", str(write_spec(tmp_path / "study.yaml", study)), cwd=tmp_path)
    assert "energy_key" not in result.err, result.err


def test_a_misspelt_format_is_reported_against_the_atoms_sources_keys(cli, tmp_path):
    """Without `format` the source once read as a SMILES file, whose keys (column, max_molecules) the hint listed."""
    (tmp_path / "traj.npz").write_bytes(b"")
    study = tiny_study(**{"data.kind": "atoms", "data.source": {"file": "traj.npz", "fromat": "md17"},
                          "model": {"family": "painn", "widths": [8], "depths": [1]}, "hpo.tpe.model_size": "w8d1"})
    result = cli("validate", str(write_spec(tmp_path / "study.yaml", study)), cwd=tmp_path)
    assert result.code == 2 and "data.source.format: required key is missing" in result.err, result.err
    assert "unknown key 'fromat'" in result.err
    assert "allowed here: energy_key, file, forces_key, format, unit_checks, units" in result.err


def _gzipped(path, make):
    make(path.with_suffix(""))
    path.write_bytes(gzip.compress(path.with_suffix("").read_bytes()))


@pytest.mark.parametrize("name,make,format,extra,message", [
    ("nof.npz", lambda p: _water_npz(p, F=None), "md17", {},
     r"data\.source\.file: md17 file .*nof\.npz has no key 'F'.*: chemspec trains on energies and forces, so the "
     r"file needs its forces \('F'\) too"),
    ("atoms.npz", lambda p: _water_npz(p, z=np.array([8, 1])), "md17", {},
     r"data\.source\.file: .*'R' has shape \(600, 3, 3\), expected \(frames, 2, 3\) for the 2 atoms 'z' lists"),
    ("noforces.xyz", lambda p: _water_xyz(p, 'Properties=species:S:1:pos:R:3 energy=-14.2 pbc="F F F"'), "extxyz", {},
     r"data\.source\.forces_key: extxyz file .*noforces\.xyz frame 0 has no forces 'forces': chemspec trains on "
     r"energies and forces, so every structure needs both; if the file names its forces otherwise, set "
     r"data.source.forces_key"),
    ("key.xyz.gz", lambda p: _gzipped(p, _water_xyz), "extxyz", {"energy_key": "Energy"},
     r"data\.source\.energy_key: extxyz file .*key\.xyz\.gz frame 0 has no energy 'Energy'.*set data.source.energy_key"),
    ("keys.xyz", _water_xyz, "extxyz", {"energy_key": "Energy", "forces_key": "force"},
     r"data\.source\.energy_key: extxyz file .*keys\.xyz frame 0 has no energy 'Energy' and no forces 'force': "
     r"chemspec trains on energies and forces, so every structure needs both; if the file names them otherwise, set "
     r"data\.source\.energy_key and data\.source\.forces_key to those names \(found \[.*'energy'.*'forces'.*\]\), else "
     r"remove the structures without energy and forces"),
    ("nan.npz", lambda p: _water_npz(p, E=np.full((600, 1), np.nan)), "md17", {},
     r"data\.source\.file: md17 file .*nan\.npz holds 600 structures, none with finite energy, forces and positions "
     r"\(NaN, inf or beyond float32's range in every one\); check how the file was written"),
    ("nanf.npz", lambda p: _water_npz(p, F=np.where(np.arange(600)[:, None, None] < 550, np.nan, np.zeros((1, 3, 3)))),
     "md17", {},
     r"needs 600 but data\.source\.file 'nanf\.npz' has 50 to train on \(a structure whose energy, forces or "
     r"positions are NaN or infinite is left out"),
    ("zfloat.npz", lambda p: _water_npz(p, z=np.array([8.0, 1.0, 1.0])), "md17", {},
     r"'z' must be integer atomic numbers of shape \(N,\), got float64 of shape \(3,\); write z\.astype\(int\)"),
    ("huge.npz", lambda p: _water_npz(p, F=np.full((600, 3, 3), 1e300)), "md17", {},
     r"huge\.npz holds 600 structures, none with finite energy, forces and positions \(NaN, inf or beyond float32's "
     r"range in every one\)"),
], ids=["npz-no-forces", "npz-atom-count", "extxyz-no-forces", "gzipped-extxyz-energy-key", "extxyz-both-keys",
        "npz-no-finite-energy",
        "npz-forces-mostly-nan", "npz-float-numbers", "npz-forces-beyond-float32"])
def test_validate_refuses_an_atoms_file_the_data_stage_would(cli, tmp_path, name, make, format, extra, message):
    """Once, these passed validate and compile and failed only at `dvc repro`'s data stage."""
    make(tmp_path / name)
    study = tiny_study(**{"data.kind": "atoms", "data.source": {"file": name, "format": format, **extra},
                          "data.sizes": [100, 200], "model": {"family": "painn", "widths": [8], "depths": [1]},
                          "hpo.tpe.model_size": "w8d1", "hpo.tpe.data_size": 100})
    spec = write_spec(tmp_path / "study.yaml", study)
    for command in ("validate", "compile"):
        result = cli(command, str(spec), cwd=tmp_path)
        assert result.code == 2 and "Traceback" not in result.err, result.err
        assert re.search(message, result.err), result.err
    assert not (tmp_path / "dvc.yaml").exists() and not (tmp_path / "params.yaml").exists()


def test_an_energy_level_the_hdf5_file_lacks_is_blamed_on_energy_key(cli, shared, tmp_path):
    study = tiny_study(**{"data.kind": "atoms", "data.sizes": [2, 4], "data.validation": 1, "data.test": 1,
                          "data.source": {"file": str(shared / "ani" / "ani1x_n5.hdf5"), "format": "ani1x",
                                          "units": {"energy": "Hartree"}, "energy_key": "b3lyp.energy"},
                          "model": {"family": "painn", "widths": [8], "depths": [1]},
                          "hpo.tpe.model_size": "w8d1", "hpo.tpe.data_size": 2})
    result = cli("validate", str(write_spec(tmp_path / "study.yaml", study)), cwd=tmp_path)
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert re.search(r"data\.source\.energy_key: ani1x file .*ani1x_n5\.hdf5: group '\w+' has no 'b3lyp\.energy'",
                     result.err), result.err


def test_an_empty_hdf5_group_is_named_as_such_not_blamed_on_energy_key(shared, tmp_path):
    import shutil

    import h5py

    path = tmp_path / "ani.hdf5"
    shutil.copy(shared / "ani" / "ani1x_n5.hdf5", path)
    with h5py.File(path, "r+") as handle:
        handle.create_group("C9H9")
    with pytest.raises(RunError, match=r"ani1x file .*ani\.hdf5: group 'C9H9' is empty \(no datasets\); remove it "
                                       r"from the file") as raised:
        count_structures(path, "ani1x")
    assert raised.value.field == "file"


def test_an_empty_extxyz_file_is_refused_as_empty(cli, tmp_path):
    (tmp_path / "empty.xyz").write_text("")
    study = tiny_study(**{"data.kind": "atoms", "data.source": {"file": "empty.xyz", "format": "extxyz"},
                          "data.sizes": [100, 200], "model": {"family": "painn", "widths": [8], "depths": [1]},
                          "hpo.tpe.model_size": "w8d1", "hpo.tpe.data_size": 100})
    result = cli("validate", str(write_spec(tmp_path / "study.yaml", study)), cwd=tmp_path)
    assert result.code == 2 and "data.source.file: 'empty.xyz' holds no structures (it is empty); check the file, " \
        "or name another" in result.err, result.err


@pytest.mark.parametrize(("key", "kind"), [("E", "str"), ("R", "complex128"), ("F", "str")])
def test_arrays_of_text_or_complex_numbers_are_refused_by_name_not_converted(cli, shared, tmp_path, key, kind):
    arrays = dict(np.load(shared / "md17" / "md17_ethanol_first2000.npz"))
    arrays[key] = arrays[key].astype(kind)
    np.savez(tmp_path / "odd.npz", **arrays)
    said = f"md17 file {tmp_path / 'odd.npz'}: {key!r} holds {np.dtype(kind) if kind != 'str' else '<U'}"
    with pytest.raises(RunError, match=re.escape(said)):
        load_file(tmp_path / "odd.npz", "md17", "kcal/mol", "Angstrom")
    result = cli("validate", str(atoms_study(tmp_path, "odd.npz", "md17", [200])))
    assert result.code == 2 and said in result.err and "Traceback" not in result.err, result.err


@pytest.mark.parametrize("edit,message", [
    (lambda g: g.__setitem__("coordinates", g.pop("coordinates")[..., :2]),
     r"'coordinates' has shape \(\d+, \d+, 2\), expected \(frames, \d+, 3\)"),
    (lambda g: g.__setitem__("wb97x_dz.forces", g.pop("wb97x_dz.forces")[:, 1:]),
     r"'wb97x_dz\.forces' has shape \(\d+, \d+, 3\), expected"),
    (lambda g: g.__setitem__("wb97x_dz.energy", g.pop("wb97x_dz.energy")[1:]),
     r"'wb97x_dz\.energy' has shape \(\d+,\), expected"),
    (lambda g: g.__setitem__("atomic_numbers", np.array([b"C", b"H"])), r"'atomic_numbers' must be integer atomic"),
    (lambda g: g.__setitem__("wb97x_dz.energy", {"values": g.pop("wb97x_dz.energy")}),
     r"'wb97x_dz\.energy' is a group, not a dataset"),
], ids=["coordinates-2d", "forces-atom-short", "energy-short", "symbols", "energy-group"])
def test_validate_checks_every_ani1x_groups_shapes_as_the_data_stage_would(cli, shared, tmp_path, edit, message):
    """From a review: these passed validate and compile, and failed only at the data stage."""
    import h5py

    with h5py.File(shared / "ani" / "ani1x_n5.hdf5") as source, h5py.File(tmp_path / "ani.h5", "w") as target:
        for name in source:
            arrays = {key: source[name][key][()] for key in ("atomic_numbers", "coordinates", "wb97x_dz.energy",
                                                              "wb97x_dz.forces")}
            if name == sorted(source)[-1]:
                edit(arrays)
            group = target.create_group(name)
            for key, value in arrays.items():
                if isinstance(value, dict):
                    group.create_group(key).create_dataset("values", data=value["values"])
                else:
                    group[key] = value
    study = tiny_study(**{"data.kind": "atoms", "data.sizes": [2, 4], "data.validation": 1, "data.test": 1,
                          "data.source": {"file": "ani.h5", "format": "ani1x"},
                          "model": {"family": "painn", "widths": [8], "depths": [1]},
                          "hpo.tpe.model_size": "w8d1", "hpo.tpe.data_size": 2})
    result = cli("validate", str(write_spec(tmp_path / "study.yaml", study)), cwd=tmp_path)
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert re.search(r"data\.source\.file: ani1x file .*ani\.h5 group '\w+': " + message, result.err), result.err


def test_a_nested_hdf5_layout_is_named_as_such_not_blamed_on_energy_key(shared, tmp_path):
    import h5py

    with h5py.File(shared / "ani" / "ani1x_n5.hdf5") as source, h5py.File(tmp_path / "ani1.h5", "w") as target:
        for name in source:
            source.copy(source[name], target.require_group("gdb11_s01"), name=name)
    with pytest.raises(RunError, match=r"ani1x file .*ani1\.h5: group 'gdb11_s01' holds groups \(\w+, \w+, \w+ …\), "
                                       r"not datasets; chemspec reads one level of groups, a group per formula"):
        count_structures(tmp_path / "ani1.h5", "ani1x")


@pytest.mark.parametrize(("energy", "length"), [("hartree", "Å"), ("EV", "angstrom"), ("Kcal/Mol", "BOHR"),
                                               ("Ha", "A"), ("hartrees", "Ang"), ("eV", "angstroms")])
def test_units_spelled_in_any_case_are_the_units_they_name(energy, length):
    """`length: angstrom` was refused ("Input should be 'Angstrom' or 'bohr'"), and README writes Å."""
    from chemspec.specs.atoms_source import Units

    units = Units(energy=energy, length=length)
    assert (units.energy, units.length) == ({"hartree": "Hartree", "EV": "eV", "Kcal/Mol": "kcal/mol", "Ha": "Hartree",
                                             "hartrees": "Hartree", "eV": "eV"}[energy],
                                            "bohr" if length == "BOHR" else "Angstrom")
    assert Units(force="eV/A").force == "eV/Angstrom" and Units(force="kcal/mol/Ang").force == "kcal/mol/Angstrom"
    with pytest.raises(ValueError, match=r"energy\n  Input should be 'eV', 'kcal/mol', 'kJ/mol' or 'Hartree'"):
        Units(energy="kcal")
    with pytest.raises(ValueError, match=r"energy\n  Input should be 'eV'"):
        Units(energy="Å")
    with pytest.raises(ValueError, match=r"length\n  Input should be 'Angstrom' or 'bohr'"):
        Units(length="Ha")


def test_a_format_written_in_capitals_is_the_format_it_names(tmp_path):
    from chemspec.specs.atoms_source import AtomsFileSource

    assert AtomsFileSource(file="x.npz", format="MD17").format == "md17"
    assert AtomsFileSource.model_validate({"file": "x.xyz", "format": " ExtXYZ "}).units.energy == "eV"
