"""Print the Dagster asset graph of `assets.definitions` as text, one stage (op) per line.

docs/asset_graph.png (the README's picture) and the text graph in docs/pipeline.md are this
script's output, generated from the definitions rather than drawn by hand (a hand-drawn picture
went stale as stages were added):

    PYTHONPATH=$PWD .venv/bin/python scripts/asset_graph.py
    PYTHONPATH=$PWD .venv/bin/python scripts/asset_graph.py --png docs/asset_graph.png

Stages come in dependency order; each line names the stage, the tables (assets) it writes and
the stages it reads from. External assets (`lineage`) are listed at the end. `--png` also draws
the same graph with matplotlib: one box per stage, in columns by the longest path from the corpus.
"""

import argparse
from graphlib import TopologicalSorter

from assets.definitions import defs


def stage_graph() -> tuple[dict[str, list[str]], dict[str, set[str]], list[str]]:
    """(stage -> tables it writes, stage -> upstream stages, external assets), from the definitions."""
    graph = defs.resolve_asset_graph()
    writer: dict[str, str] = {}
    tables: dict[str, list[str]] = {}
    external: list[str] = []
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        name = key.to_user_string()
        if not node.is_materializable:
            external.append(name)
            continue
        stage = node.assets_def.node_def.name
        writer[name] = stage
        tables.setdefault(stage, []).append(name)
    upstream: dict[str, set[str]] = {stage: set() for stage in tables}
    for key in graph.toposorted_asset_keys:
        stage = writer.get(key.to_user_string())
        if stage is None:
            continue
        for parent in graph.get(key).parent_keys:
            parent_stage = writer.get(parent.to_user_string())
            if parent_stage and parent_stage != stage:
                upstream[stage].add(parent_stage)
    return tables, upstream, external


def implied(up: str, stage: str, upstream: dict[str, set[str]]) -> bool:
    """Whether `stage` also reaches `up` through another stage (the picture leaves that edge out)."""
    seen, todo = set(), [u for u in upstream[stage] if u != up]
    while todo:
        node = todo.pop()
        if node == up:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(upstream[node])
    return False


def draw(path: str, order: list[str], tables: dict[str, list[str]], upstream: dict[str, set[str]]) -> None:
    """Write the stage graph as a PNG: columns by depth, edges from each stage to its readers."""
    import matplotlib  # optional: only the picture needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth: dict[str, int] = {}
    for stage in order:
        depth[stage] = 1 + max((depth[up] for up in upstream[stage]), default=-1)
    columns: dict[int, list[str]] = {}
    for stage in order:
        columns.setdefault(depth[stage], []).append(stage)
    rows = max(map(len, columns.values()))
    where = {stage: (col * 2.6, ((len(stages) - 1) / 2 - i) * 1.6)  # each column centred on y = 0
             for col, stages in columns.items() for i, stage in enumerate(stages)}
    fig, ax = plt.subplots(figsize=(2.4 * len(columns), 1.2 * rows + 0.6))
    boxes = {}
    for stage, (x, y) in where.items():
        listed = [t for t in tables[stage] if t != stage]
        label = stage + ("\n" + "\n".join("  " + t for t in listed) if listed else "")
        boxes[stage] = ax.text(x, y, label, ha="center", va="center", fontsize=7, family="monospace",
                               bbox={"boxstyle": "round,pad=0.4", "fc": "#e8f5ee", "ec": "#2e9e6a"})
    fig.canvas.draw()  # sizes the boxes, so arrows can end at their borders
    for stage, ups in upstream.items():
        for up in ups:
            if implied(up, stage, upstream):
                continue
            ax.annotate("", xy=where[stage], xytext=where[up], arrowprops={
                "arrowstyle": "->", "color": "0.55", "lw": 0.8, "connectionstyle": "arc3,rad=0.08",
                "patchA": boxes[up].get_bbox_patch(), "patchB": boxes[stage].get_bbox_patch()})
    ax.set_xlim(-1.6, 2.6 * (len(columns) - 1) + 1.6)
    ax.set_ylim(-rows * 0.8 - 0.4, rows * 0.8 + 0.4)
    ax.axis("off")
    ax.set_title("grasp-pipeline stages (assets.definitions): a box lists the other tables a stage writes;"
                 " edges implied by a longer path are left out", fontsize=8)
    fig.savefig(path, dpi=150, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--png", help="also draw the graph to this PNG file (needs matplotlib)")
    args = parser.parse_args()
    tables, upstream, external = stage_graph()
    # sorted predecessors: set order varies with the string hash seed, the printed order must not
    order = list(TopologicalSorter({stage: sorted(upstream[stage]) for stage in tables}).static_order())
    if args.png:
        draw(args.png, order, tables, upstream)
    width = max(map(len, order))
    for stage in order:
        reads = ", ".join(sorted(upstream[stage], key=order.index)) or "(the corpus files)"
        print(f"{stage:<{width}}  writes {', '.join(tables[stage])}")
        print(f"{'':<{width}}  reads  {reads}")
    for name in external:
        print(f"{name:<{width}}  external asset: every stage appends to it")


if __name__ == "__main__":
    main()
