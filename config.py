"""This deployment's pipeline: the seed's default, XML to JSON then clean-up.

Each entry: ``id`` (the step's file: ``processing_steps/<id>.py`` beside this file,
else a built-in step), ``name`` (the label shown), ``module`` (the function in that
file), ``delay`` (seconds to wait before the step: handy to watch a demo),
``error_chance`` (0..1: inject failures to test your error handling) and optional
``options`` (passed to the step). ``xmlflow steps`` checks this file.
"""

PROCESSING_STEPS = [
    {
        "id": "process_xml",
        "name": "Processing XML and Generating JSON Structures",
        "module": "run_xml_processing_step",
        "delay": 0.5,
        "error_chance": 0.00,
    },
    {
        "id": "cleanup",
        "name": "Finalizing and Cleaning Up",
        "module": "run_cleanup_step",
        "delay": 0.5,
        "error_chance": 0.00,
    },
]
