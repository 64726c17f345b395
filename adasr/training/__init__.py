"""Training-only code: the AdaSR source-image degradation and (later) the training loop.

Nothing here is needed at inference time; the adaptive super-resolution of AdaSR lives entirely in
how the generator is trained (official-architecture.md §0 and §7).
"""
