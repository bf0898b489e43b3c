"""The use session's prompts (issue 15): written for it, none from the benchmark sets;
10 per domain, in session order code, legal, medical."""

CODE = [
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function that checks whether a string is a palindrome, ignoring case.",
    "Write a Python function that counts how many times each word appears in a text.",
    "Write a Python function that reverses a singly linked list.",
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Write a Python function that returns the largest value in a list without using max().",
    "Write a Python function that removes duplicate items from a list but keeps their order.",
    "Write a Python function that converts a temperature from Celsius to Fahrenheit.",
    "Write a Python function that flattens a nested list of lists into one list.",
    "Write a Python function that returns True when a number is prime.",
]
LEGAL = [
    "Explain what a non-disclosure agreement is and what it usually contains.",
    "Explain the difference between a contract and a verbal agreement.",
    "Explain what breach of contract means and what remedies a party may have.",
    "Explain what a tenant's rights are when a landlord does not make repairs.",
    "Explain what a power of attorney is and when someone might need one.",
    "Explain what copyright protects and how long it usually lasts.",
    "Explain what a will is and what happens when someone dies without one.",
    "Explain what liability means in a contract and how a limitation clause works.",
    "Explain what an employment contract usually says about termination and notice.",
    "Explain what a warranty in a sales contract is.",
]
MEDICAL = [
    "Explain what high blood pressure is and how it is usually treated.",
    "Explain the common symptoms of type 2 diabetes and how it is diagnosed.",
    "Explain what causes asthma and how an inhaler helps.",
    "Explain what a fever is and when a patient should see a doctor.",
    "Explain what cholesterol is and why high cholesterol is a risk for the heart.",
    "Explain the common symptoms of a migraine and how it is treated.",
    "Explain what an antibiotic is and why it does not work against viruses.",
    "Explain what anemia is, its symptoms and its usual treatment.",
    "Explain what a stroke is and what its warning signs are.",
    "Explain what an allergy is and how antihistamines help.",
]
DOMAINS = {"code": CODE, "legal": LEGAL, "medical": MEDICAL}
