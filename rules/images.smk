# Synthetic images: the named scenes of images.synthetic.scenes and the images.synthetic.corner_pairs
# pairs, all by one rule. The shapes drawn are a param, so a changed scene (or, for corner pairs, a
# changed seed) redraws its image.
rule draw_scene:
    input:
        code=code_of("draw_scene.py"),
    output:
        png=f"{R}/images/{{image}}.png",
        json=f"{R}/images/{{image}}.json",
    log:
        f"{R}/logs/draw_scene/{{image}}.log",
    conda:
        ENV_ANALYSIS
    params:
        size=config["images"]["synthetic"]["size"],
        shapes=lambda w: synthetic_shapes(w.image),
    script:
        "../workflow_scripts/draw_scene.py"
