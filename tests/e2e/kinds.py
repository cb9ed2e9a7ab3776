"""Each kind of artifact a training job writes, tried in turn under whatever upload mode the
environment holds; prints `KIND=ok` or `KIND=failed: <error>` for each, so a test can tell
which kinds a mode carries."""

import mlflow
import mlflow.pyfunc


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


@mlflow.trace
def step(x: int) -> int:
    return x + 1


def attempt(kind: str, call) -> None:
    try:
        call()
        print(f"{kind}=ok")
    except Exception as exc:  # noqa: BLE001 - each kind's failure is the finding
        print(f"{kind}=failed: {type(exc).__name__}: {str(exc)[:200]}")


with mlflow.start_run() as run:
    attempt("text", lambda: mlflow.log_text("hello", "notes/hello.txt"))
    attempt("dict", lambda: mlflow.log_dict({"a": 1}, "config.json"))
    attempt("model", lambda: mlflow.pyfunc.log_model(name="model", python_model=Echo()))

    def traced() -> None:
        step(1)
        mlflow.flush_trace_async_logging(terminate=False)
        trace_id = mlflow.get_last_active_trace_id()
        assert trace_id and mlflow.get_trace(trace_id) is not None, trace_id
        assert mlflow.get_trace(trace_id).data.spans, "no spans stored"

    attempt("trace", traced)
print(f"RUN_ID={run.info.run_id}")
