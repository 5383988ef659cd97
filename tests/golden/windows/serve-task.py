# Run at logon by the Task Scheduler task `halton-meter` (written by `halton-meter init`, removed by
# `halton-meter uninstall`). A task cannot carry environment variables, so this sets them and then
# runs the meter in this same process: ending the task ends the meter.
import os
import runpy
import sys

os.environ.update({
    'HALTON_METER_HOME': 'C:\\Users\\Ada Lovelace\\.halton-meter',
    'HALTON_METER_LOG_DIR': 'C:\\Users\\Ada Lovelace\\.halton-meter\\logs',
    'PYTHONUNBUFFERED': '1',
})
# Under pythonw there is no console: what would go there (a failure before logging starts) goes here.
os.makedirs('C:\\Users\\Ada Lovelace\\.halton-meter\\logs', exist_ok=True)
sys.stdout = sys.stderr = open('C:\\Users\\Ada Lovelace\\.halton-meter\\logs\\serve.out', 'a', encoding='utf-8', buffering=1)
sys.argv = ['halton_meter', 'serve']
runpy.run_module('halton_meter', run_name='__main__', alter_sys=True)
