"""Setting the meter up and keeping it running: the command-runner seam (`commands`), platform detection
(`platforms`), recorded changes (`state`), the init engine (`init`) and service control (`services`)."""
