"""The prompts the target answers for self-distillation (selfgen.py): three sets built
from task, style and topic lists, none of them the benchmark's. Each set writes its own
shard series, so sets add up in one folder."""
from __future__ import annotations

import numpy as np

CODE_TASKS = [
    "checks whether a string is a palindrome", "merges two sorted lists", "flattens a nested list",
    "counts word frequencies in a text", "reads a JSON file and returns a dict",
    "computes the greatest common divisor of two numbers", "validates an email address with a regex",
    "removes duplicates from a list while keeping order", "converts Celsius to Fahrenheit",
    "finds the longest common prefix of a list of strings", "implements binary search",
    "reverses the words in a sentence", "chunks a list into pieces of size n",
    "computes a moving average over a list", "parses a date string into a datetime",
    "retries a function call with exponential backoff", "implements a simple LRU cache",
    "checks whether a number is prime", "transposes a matrix given as a list of lists",
    "walks a directory tree and lists all .txt files", "groups a list of dicts by a key",
    "computes the factorial of n recursively", "implements a stack class with push and pop",
    "downloads a URL with urllib and returns the text", "sorts a dictionary by its values",
    "computes the median of a list", "generates all permutations of a string",
    "implements quicksort", "converts a Roman numeral to an integer", "times a function with a decorator",
]
CODE_STYLES = [
    "Keep it short.", "Include a docstring and a usage example.", "Add type hints and explain it briefly.",
    "Write it without any imports and add comments.",
]
PROSE_TOPICS = [
    "a rainy morning in a small harbour town", "an old clockmaker's workshop", "the first day of spring",
    "a train journey through the mountains", "a lost cat finding its way home",
    "a market at dawn", "a scientist on the verge of a discovery", "a letter that arrived forty years late",
    "a city at night seen from a rooftop", "a garden left untended for a year",
    "two friends meeting after a long time", "a storm over the open sea",
    "a bakery before opening time", "a child's first snowfall", "an abandoned railway station",
    "a fisherman mending his nets", "a library after closing", "a village festival in summer",
    "a desert crossing by caravan", "a robot learning to paint", "a forest after a wildfire",
    "a musician's last concert", "a bridge being built across a river", "an astronaut looking back at Earth",
]
PROSE_FORMS = [
    "Write a short paragraph describing {}.", "Write the opening paragraph of a short story about {}.",
    "Write a short poem about {}.", "Write a diary entry about {}.",
]
QA_TOPICS = [
    "how vaccines train the immune system", "why the sky is blue", "what inflation is",
    "how a hash table works", "what photosynthesis does", "why we have leap years",
    "how TCP differs from UDP", "what a black hole is", "how compound interest works",
    "what causes tides", "how a compiler differs from an interpreter", "why ice floats on water",
    "what the difference between a list and a tuple in Python is", "how GPS finds your position",
    "what machine learning is", "why bread rises", "how a refrigerator keeps food cold",
    "what DNA does in a cell", "how an electric motor works", "why volcanoes erupt",
    "what a recursive function is", "how public-key encryption works", "why the moon has phases",
    "how a bill becomes a law", "what an API is", "how the heart pumps blood",
    "why rainbows form", "what a database index is", "how noise-cancelling headphones work",
    "what supply and demand mean",
]
QA_FORMS = [
    "Explain {} in a few sentences.", "Explain {} to a ten-year-old.", "Briefly describe {}, step by step.",
]


# A second, larger set (`--set more`): other tasks and forms, so more replies can be added
# to a folder without changing the shards of the first set.
MORE_CODE_TASKS = [
    "parses a URL query string into a dict", "computes the Levenshtein distance between two strings",
    "finds all anagrams of a word in a list", "converts an integer to its binary representation",
    "implements a queue with two stacks", "checks whether parentheses in a string are balanced",
    "computes the nth prime number", "rotates a list by k positions", "merges overlapping intervals",
    "finds the most common element in a list", "implements depth-first search on a graph",
    "implements breadth-first search on a graph", "counts the vowels in a string",
    "converts a snake_case string to camelCase", "computes the dot product of two vectors",
    "checks whether two strings are anagrams", "finds the second largest number in a list",
    "reads a CSV file and returns a list of dicts", "writes a list of dicts to a CSV file",
    "implements bubble sort", "implements merge sort", "implements insertion sort",
    "computes the power set of a list", "flattens a nested dictionary into dotted keys",
    "finds the maximum subarray sum", "checks whether a year is a leap year",
    "computes the sum of digits of an integer", "generates the first n rows of Pascal's triangle",
    "validates a Sudoku board", "converts a number to words in English",
    "implements a linked list with insert and delete", "implements a binary search tree insert",
    "computes the height of a binary tree", "finds the intersection of two lists",
    "capitalises the first letter of every word", "masks all but the last four digits of a card number",
    "computes compound interest", "parses command-line arguments with argparse",
    "hashes a password with hashlib and a salt", "runs a shell command and captures its output",
    "computes the SHA-256 of a file", "splits a text into sentences",
    "finds duplicate files in a directory by content", "pretty-prints a table of rows",
    "converts a dict to an XML string", "memoizes a function with functools",
    "computes the Collatz sequence of n", "checks whether a string is a valid IPv4 address",
    "returns the unique characters of a string in order", "computes the least common multiple",
    "implements run-length encoding", "decodes a run-length encoded string",
    "generates a random password", "counts lines, words and characters in a file",
    "finds the k largest elements with heapq", "implements a trie with insert and search",
    "simulates rolling two dice many times", "computes the area of a polygon from its vertices",
    "converts hours and minutes to a total number of minutes", "schedules tasks with a priority queue",
]
MORE_CODE_STYLES = [
    "Keep it short.", "Include a docstring and a usage example.", "Add type hints and explain it briefly.",
    "Explain how it works after the code.", "Write tests for it with pytest too.",
]
MORE_PROSE_TOPICS = [
    "a fox in a snowy forest", "a mountain village in winter", "a street musician in the rain",
    "a chess game in a park", "the last day of summer holidays", "a ship leaving port at dawn",
    "an inventor's cluttered attic", "a quiet beach in autumn", "a hot air balloon over fields",
    "a kitchen on a busy holiday", "a letter from a grandmother", "a power cut in a big city",
    "a dog waiting at a station", "a museum at midnight", "the first snow in a big city",
    "a road trip across a desert", "a piano in an empty hall", "a boy building a raft",
    "a thunderstorm over a farm", "an island with one inhabitant", "a midnight train",
    "a painter losing her sight", "a beekeeper in June", "an empty theatre",
    "a night market in a port city", "a cottage in a snowstorm", "a river in flood",
    "a girl who talks to birds", "a clock tower that stopped", "a spaceship's long voyage",
    "a walk through an old cemetery", "a carnival packing up", "a broken umbrella",
    "an old map found in a book", "a city waking up", "a cat on a windowsill",
    "a wedding in the rain", "a lost key", "the smell of fresh coffee", "a bicycle ride at sunset",
]
MORE_PROSE_FORMS = [
    "Write a short paragraph describing {}.", "Write the opening paragraph of a short story about {}.",
    "Write a short poem about {}.", "Describe {} in vivid detail.", "Write a haiku about {}.",
]
MORE_QA_TOPICS = [
    "how airplanes stay in the air", "what causes earthquakes", "how the internet works",
    "what a neural network is", "why leaves change colour in autumn", "how solar panels make electricity",
    "what an atom is made of", "how batteries store energy", "what causes the northern lights",
    "how a search engine ranks pages", "what gravity is", "why the ocean is salty",
    "how a microwave oven heats food", "what a virus is", "how muscles grow",
    "what the greenhouse effect is", "how a camera works", "what an operating system does",
    "how memory works in a computer", "what a blockchain is", "why we dream",
    "how the stock market works", "what evolution by natural selection means",
    "how a nuclear reactor produces power", "what a prime number is", "why we need sleep",
    "what the speed of light is", "how plants absorb water", "what a programming language is",
    "how a thermostat works", "what antibiotics do", "how a submarine dives and surfaces",
    "what recursion is in programming", "how a vaccine is tested", "what a calorie is",
    "why cats purr", "what an exchange rate is", "how weather forecasts are made",
    "what Git is used for", "how a lock and key work", "what big O notation means",
    "how sound travels", "what a web server does", "why the Earth is round",
    "what an electric circuit is", "how coffee affects the body", "what a derivative is in calculus",
    "how a bicycle stays upright", "what an ecosystem is", "how glasses correct vision",
]
MORE_QA_FORMS = [
    "Explain {} in a few sentences.", "Explain {} to a ten-year-old.", "Briefly describe {}, step by step.",
    "In one short paragraph, explain {}.",
]


# A third set (`--set extra`), again disjoint from the others.
EXTRA_CODE_TASKS = [
    "computes the mode of a list of numbers", "converts a hex colour string to an RGB tuple",
    "checks whether a linked list has a cycle", "finds the longest palindromic substring",
    "counts the islands in a grid of 0s and 1s", "computes the edit path between two lists",
    "returns the n most frequent words in a file", "implements a min-heap class",
    "converts a list of tuples into a dictionary", "finds all pairs in a list that sum to a target",
    "normalises whitespace in a string", "computes the Jaccard similarity of two sets",
    "checks whether a matrix is symmetric", "implements a circular buffer",
    "finds the missing number in a range", "computes the cumulative sum of a list",
    "parses a simple INI file into a dict", "converts seconds into a human-readable duration",
    "implements Dijkstra's shortest path algorithm", "implements a topological sort",
    "finds the longest increasing subsequence", "computes the number of ways to climb n stairs",
    "removes HTML tags from a string", "splits a list into training and test sets",
    "generates all subsets of size k", "checks whether a string has all unique characters",
    "counts the set bits in an integer", "finds the first non-repeating character in a string",
    "computes the average word length in a sentence", "zips two lists into a dictionary",
    "implements a rate limiter", "converts a tree to a list level by level",
    "computes the standard deviation of a list", "interleaves two strings",
    "builds a histogram of letter counts", "rounds a float to n significant digits",
    "checks whether a number is a perfect square", "finds common elements of three sorted lists",
    "encodes a string with a Caesar cipher", "reads a text file backwards line by line",
]
EXTRA_CODE_STYLES = [
    "Keep it short.", "Include a docstring and a usage example.", "Add type hints and explain it briefly.",
]
EXTRA_PROSE_TOPICS = [
    "a tram crossing a frozen city", "an orchard at harvest time", "a violin maker's last commission",
    "a rocky coast at dusk", "a sandstorm in an ancient city", "a lost glove on a park bench",
    "a night shift in a hospital", "a glassblower at work", "a farmer waiting for rain",
    "a paper boat on a stream", "an old bookshop closing for good", "a kite festival on a windy hill",
    "a fog bank rolling over a valley", "a detective's rainy office", "a moth drawn to a porch light",
    "a tailor sewing a wedding dress", "a mountain hut during a blizzard", "a stray dog adopted by a town",
    "a journey on a slow river ferry", "an orchestra tuning up", "a child's abandoned treehouse",
    "a cyclist climbing an alpine pass", "a harbour seal watching tourists", "a candle-lit dinner during a storm",
    "the first morning in a new country", "a potter at her wheel", "a deserted fairground in winter",
    "a letter never sent", "a family reunion after a war", "a bee lost in a greenhouse",
]
EXTRA_PROSE_FORMS = [
    "Write a short paragraph describing {}.", "Write a short scene about {}.", "Write a short poem about {}.",
]
EXTRA_QA_TOPICS = [
    "how a credit score is calculated", "why the sea has waves", "how an elevator works",
    "what a tariff is", "how clouds form", "what a firewall does", "why onions make you cry",
    "how a touchscreen detects a finger", "what entropy means", "how a river delta forms",
    "what a mortgage is", "how caffeine keeps you awake", "why some metals rust",
    "how a jet engine works", "what a container is in software", "why birds migrate",
    "how a compass works", "what an index fund is", "how yeast ferments sugar",
    "what a hash function is", "how fibre-optic cables carry data", "why the sun shines",
    "how a password manager works", "what a carbon footprint is", "how bees make honey",
    "what unit testing is", "how an earthquake is measured", "why metal feels colder than wood",
    "how a loan's interest is computed", "what a time zone is",
]
EXTRA_QA_FORMS = [
    "Explain {} in a few sentences.", "Explain {} to a ten-year-old.", "Describe {} in one short paragraph.",
]


def _compose(code_tasks, code_styles, prose_topics, prose_forms, qa_topics, qa_forms) -> list[str]:
    out = [f"Write a Python function that {t}. {s}" for s in code_styles for t in code_tasks]
    out += [f.format(t) for f in prose_forms for t in prose_topics]
    out += [f.format(t) for f in qa_forms for t in qa_topics]
    return out


def default_prompts() -> list[str]:
    return _compose(CODE_TASKS, CODE_STYLES, PROSE_TOPICS, PROSE_FORMS, QA_TOPICS, QA_FORMS)


def more_prompts() -> list[str]:
    return _shuffled(_compose(MORE_CODE_TASKS, MORE_CODE_STYLES, MORE_PROSE_TOPICS, MORE_PROSE_FORMS,
                              MORE_QA_TOPICS, MORE_QA_FORMS), seed=0)


def extra_prompts() -> list[str]:
    return _shuffled(_compose(EXTRA_CODE_TASKS, EXTRA_CODE_STYLES, EXTRA_PROSE_TOPICS, EXTRA_PROSE_FORMS,
                              EXTRA_QA_TOPICS, EXTRA_QA_FORMS), seed=1)


def _shuffled(prompts: list[str], seed: int) -> list[str]:
    """A fixed shuffle, so that --limit takes a mix of code, prose and explanations."""
    return [prompts[i] for i in np.random.default_rng(seed).permutation(len(prompts))]


# set name -> (file-name suffix of its shards and replies, its prompts)
PROMPT_SETS = {"base": ("", default_prompts), "more": ("-more", more_prompts), "extra": ("-extra", extra_prompts)}
