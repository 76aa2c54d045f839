"""Measured comparisons printed as figures: ``python -m llmcourse.benchmarks {train,attention,generation,moe,tokenizer,all}``.

Every benchmark measures its baseline in the same process and prints ratios,
so its numbers mean something on any machine.
"""
