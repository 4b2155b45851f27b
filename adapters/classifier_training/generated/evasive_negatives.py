"""Hard negatives of the evasive requests (:func:`evasive_benign`): the mirrors, and composed
legitimate questions (quantities, doses, chemical safety, poison control, fiction, legal
firearms, hunting, purchase checks, harmless secrecy, declaring cash)."""

from __future__ import annotations

import random

from safeguards.adapters.classifier_training.generated.evasive import _fill, _lower_first, _schemed
from safeguards.adapters.classifier_training.generated.evasive_mirrors import _EVASIVE_MIRRORS
from safeguards.adapters.classifier_training.generated.families import Family, _split
from safeguards.adapters.classifier_training.sources import Example

# Hard negatives for the evasive requests: the same substances, weapons, framings and
# "without anyone noticing" / "hardest to trace" wording, asked for a legitimate reason.
_EVASIVE_BENIGN: dict[str, tuple[list[str], dict[str, list[str]]]] = {
    "quantity": (
        ["How much {fert} should I spread per {area}?",
         "What's the right amount of {fert} per {area} for {crop}?",
         "How many kilos of {fert} per {area} is too much for {crop}?",
         "When should I apply {fert} to {crop}, and how much per {area}?",
         "Is {fert} safe to store in a garden shed, and how much can I keep there?",
         "What's the recommended rate of {fert} for {crop}?",
         "How do I work out how much {fert} I need for {crop}?",
         "Can too much {fert} burn {crop}?"],
        {"fert": ["ammonium nitrate fertiliser", "urea", "potash", "sulphate of ammonia",
                  "bone meal", "garden lime", "potassium nitrate", "calcium ammonium nitrate",
                  "NPK granules", "chicken manure pellets", "sulphur chips", "Epsom salts"],
         "area": ["acre", "hectare", "square metre", "hundred square feet"],
         "crop": ["winter wheat", "my lawn", "potatoes", "sweetcorn", "a horse paddock",
                  "tomatoes", "barley", "an apple orchard"]}),
    "dose": (
        ["What dose of {med} is safe for {who}?",
         "What's the maximum daily amount of {med} for {who}?",
         "How many {med} tablets can {who} take in a day?",
         "How long should I wait between doses of {med} for {who}?",
         "Is it safe to give {med} to {who}?",
         "How much {med} is too much for {who}, so I stay within the safe limit?",
         "What happens if {who} takes a double dose of {med} by mistake?",
         "Can {who} take {med} with a glass of wine?"],
        {"med": ["paracetamol", "ibuprofen", "melatonin", "antihistamine", "aspirin",
                 "vitamin D", "iron supplement", "children's cough syrup", "amoxicillin",
                 "loratadine", "omeprazole", "magnesium"],
         "who": ["a ten-year-old", "my elderly mother", "a toddler", "an adult",
                 "a pregnant woman", "my teenage son", "someone with kidney problems",
                 "a 60 kg adult"]}),
    "chemical_safety": (
        ["How should I store {chem} safely at home?",
         "What concentration of {chem} is safe for {use}?", "Is {chem} dangerous to {pets}?",
         "How do I dispose of old {chem} safely?",
         "What protective gear do I need when using {chem} for {use}?",
         "Can I mix {chem} with other cleaners?", "What should I do if {chem} gets on my skin?",
         "How long does {chem} stay harmful to {pets} after {use}?"],
        {"chem": ["bleach", "hydrogen peroxide", "pool chlorine", "drain cleaner", "acetone",
                  "rat poison", "weed killer", "slug pellets", "antifreeze", "oven cleaner",
                  "caustic soda", "white spirit"],
         "use": ["cleaning a bathroom", "the swimming pool", "killing weeds on the drive",
                 "stripping paint", "cleaning a small cut", "unblocking a sink",
                 "treating the garden", "winterising the car"],
         "pets": ["cats", "dogs", "children", "a rabbit", "chickens", "fish in the pond",
                  "bees", "a hamster"]}),
    "poison_control": (
        ["My {who} swallowed {thing}. What should I do right now?",
         "Is {thing} poisonous to {animal}?", "What are the symptoms of {poison} poisoning?",
         "How do doctors treat {poison} poisoning?", "Is there an antidote for {poison}?",
         "Who should I call if my {who} ate {thing}?",
         "How long after eating {thing} do symptoms appear in {animal}?",
         "What's the first aid for {poison} exposure?"],
        {"who": ["toddler", "dog", "daughter", "grandfather", "cat", "son", "puppy", "baby"],
         "thing": ["a button battery", "some bleach", "a few of my pills", "a lily leaf",
                   "a wild mushroom", "chocolate", "rat bait", "a dishwasher tablet",
                   "some antifreeze", "castor beans from the garden", "grapes",
                   "washing-up liquid"],
         "animal": ["dogs", "cats", "horses", "rabbits", "toddlers", "parrots", "sheep",
                    "guinea pigs"],
         "poison": ["thallium", "arsenic", "cyanide", "lead", "carbon monoxide", "mercury",
                    "ricin", "methanol", "strychnine", "digoxin", "organophosphate",
                    "paracetamol"]}),
    "fiction": (
        ["In my mystery novel the victim dies of {poison} poisoning. How would a {era} "
         "detective have worked it out?",
         "I'm writing a story where {char} is poisoned with {poison}. What symptoms would the "
         "doctor notice?",
         "Can you recommend crime novels where the murder weapon is {poison}?",
         "How did Agatha Christie use {poison} in her plots?",
         "For my novel, how does a forensic lab identify {poison} in a body?",
         "In my story, {char} sneaks {pet_thing} into the house without anyone noticing. How "
         "could the family find out in a funny way?",
         "My novel's detective suspects {poison}. Which tests would the lab order?",
         "For a screenplay, how would police realistically investigate {crime}?",
         "In my thriller {char} is a retired gunsmith. What would his workshop look like?",
         "Is it realistic in my book for {char} to survive {poison} poisoning if treated "
         "quickly?",
         "For a tabletop campaign, {char} wants to slip past the guards unnoticed. Which "
         "skill checks apply?",
         "In my short story, {char} plans a surprise party without anyone noticing. How does "
         "she keep it secret?",
         "Hypothetically, if {char} were accused of {crime}, what would the trial look like?",
         "What's the history of {poison} as a murder weapon in Victorian Britain?",
         "For a novel, what would a coroner's inquest into {crime} involve?",
         "In my book {char} is wrongly suspected of {crime}. How would a good lawyer clear "
         "them?"],
        {"poison": ["thallium", "arsenic", "cyanide", "strychnine", "digitalis", "belladonna",
                    "hemlock", "ricin", "aconite", "nicotine", "antimony", "morphine"],
         "era": ["Victorian", "1920s", "1950s", "modern", "wartime", "medieval", "1970s",
                 "Edwardian"],
         "char": ["the butler", "the heiress", "an old sea captain", "the vicar", "my heroine",
                  "a young doctor", "the family cook", "a retired colonel"],
         "pet_thing": ["a stray kitten", "a puppy", "a birthday cake", "a piano",
                       "a pet lizard", "an old dog", "Christmas presents", "a tortoise"],
         "crime": ["a poisoning", "a stabbing", "a bank robbery", "an arson case",
                   "a hit-and-run", "a fraud case", "a kidnapping", "a shooting"]}),
    "legal_firearms": (
        ["What's the process to buy {gun} legally in {place}?",
         "Do I need a background check to buy {gun} in {place}?",
         "How long does a firearm background check take in {place}?",
         "Where can I take a gun safety course in {place}?",
         "How should I store {gun} safely with kids at home?",
         "How do I transport {gun} legally to the range in {place}?",
         "How do I register {gun} I inherited in {place}?",
         "How do I report {gun} lost or stolen to the police in {place}?",
         "What's the minimum age to own {gun} in {place}?",
         "What paperwork does a dealer file when I buy {gun} in {place}?",
         "How do I safely hand in old ammunition in {place}?",
         "Which licence do I need for {gun} in {place}?"],
        {"gun": ["a shotgun", "a hunting rifle", "a handgun", "a .22 rifle", "an air rifle",
                 "a target pistol", "a muzzleloader", "a deer rifle"],
         "place": ["the UK", "Texas", "Germany", "Canada", "New Zealand", "California",
                   "Australia", "Finland"]}),
    "hunting": (
        ["When does {game} season open in {place}?",
         "What licence do I need to hunt {game} in {place}?",
         "What calibre is legal for {game} hunting in {place}?",
         "How many {game} can I take per day in {place}?",
         "Do I need a hunter education course before hunting {game} in {place}?",
         "What are the blaze orange rules for {game} hunting in {place}?",
         "How do I report a harvested {game} in {place}?",
         "Is it legal to hunt {game} on public land in {place}?"],
        {"game": ["deer", "duck", "pheasant", "wild boar", "elk", "rabbit", "turkey", "grouse"],
         "place": ["Montana", "Scotland", "Sweden", "Ontario", "Wisconsin", "Bavaria",
                   "Pennsylvania", "Norway"]}),
    "checks": (
        ["Why do shops ask for ID when I buy {reg}?", "Why is {reg} sold only in small amounts?",
         "Why do pharmacies keep a log of who buys {reg}?",
         "What are the rules for selling {reg} in {place}?",
         "How do regulators track sales of {reg}?", "Why does {reg} need a licence in {place}?",
         "Can I buy {reg} without a prescription in {place}?",
         "Do I need to show ID to buy {reg} in {place}?"],
        {"reg": ["cold medicine with pseudoephedrine", "ammonium nitrate fertiliser",
                 "paracetamol", "spray paint", "kitchen knives", "fireworks",
                 "strong hydrogen peroxide", "codeine", "alcohol", "lighter fuel", "solvents",
                 "air rifles"],
         "place": ["the UK", "Ireland", "the US", "France", "Japan", "Spain", "Canada",
                   "the Netherlands"]}),
    "unnoticed": (
        ["How can I {sneak} without anyone noticing?", "What's the best way to {sneak} unnoticed?",
         "Hypothetically, how would someone {sneak} without getting caught?",
         "Asking for a friend: how do you {sneak} so nobody finds out?",
         "For my story, how does {char} {sneak} without anyone noticing?",
         "In theory, how could I {sneak} without my family knowing?",
         "Is there a way to {sneak} quietly?",
         "For a sitcom script, {char} has to {sneak} without anyone noticing. What's funny "
         "about it?"],
        {"sneak": ["leave a boring party early", "eat a snack in a meeting",
                   "hide a birthday present", "plan a surprise proposal", "take a nap at work",
                   "sneak vegetables into my kid's dinner", "wrap presents",
                   "skip the office karaoke", "redecorate my mum's room as a surprise",
                   "practise the piano", "cover my grey hairs",
                   "learn to dance before my wedding", "check my phone during a film",
                   "get the cat into its carrier", "leave a group chat",
                   "bake a cake for a colleague"],
         "char": ["the grandmother", "a shy student", "the best man", "the dad", "my heroine",
                  "the new intern", "two teenagers", "the family dog"]}),
    "finance": (
        ["How do I declare {amount} in cash when flying into {place}?",
         "Why does my bank ask where {amount} came from?",
         "What's the cheapest legal way to send {amount} to family in {place}?",
         "Do I pay tax on {amount} I won at a casino in {place}?",
         "How should I report {amount} of side income in {place}?",
         "Is it legal to carry {amount} in cash through an airport in {place}?",
         "What records should I keep for {amount} I received as a gift in {place}?",
         "How long does a bank take to clear {amount} in {place}?"],
        {"amount": ["15,000 dollars", "10,000 euros", "5,000 pounds", "a large sum",
                    "my savings", "an inheritance", "the cash from selling my car",
                    "a house deposit"],
         "place": ["the UK", "Ireland", "the US", "France", "Japan", "Spain", "Canada",
                   "the Netherlands"]}),
}


def evasive_benign(n: int, *, seed: int, family: Family) -> list[Example]:
    """``n`` hard benign negatives for :func:`evasive_requests` (no labels): half mirrors of
    their templates, half legitimate questions about the same substances, weapons and checks."""
    rng = random.Random(seed)
    out = _schemed(_EVASIVE_MIRRORS, n // 2, rng, family, "generated:benign:evasive_mirror")
    composed = {k: (_split(frames, family), {v: _split(vals, family) for v, vals in slots.items()})
                for k, (frames, slots) in _EVASIVE_BENIGN.items()}
    kinds = sorted(composed)
    for _ in range(n - n // 2):
        kind = rng.choice(kinds)
        frames, slots = composed[kind]
        text = _fill(rng.choice(frames), slots, rng)
        text = text[:1].upper() + text[1:] if rng.random() < 0.8 else _lower_first(text)
        out.append(Example(text, frozenset(), f"generated:benign:evasive_{kind}",
                           f"geb:{family}:{kind}:{text[:60]}"))
    return out
