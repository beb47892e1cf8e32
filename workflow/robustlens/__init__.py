"""robustlens: what does adversarial robustness do to what a neural network learns?

The library behind the Snakemake workflow. All logic lives here; the workflow scripts
only read ``snakemake.input``/``snakemake.params``, call into this package and write outputs.
"""

__version__ = "0.1.0"
