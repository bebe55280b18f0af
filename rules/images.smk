rule draw_scene:
    output:
        png=f"{R}/images/{{image}}.png",
        json=f"{R}/images/{{image}}.json",
    log:
        f"{R}/logs/draw_scene/{{image}}.log",
    conda:
        ENV_ANALYSIS
    params:
        size=config["images"]["synthetic"]["size"],
    script:
        "../workflow_scripts/draw_scene.py"
