def test_healthz_and_empty_assistant(client, http):
    assert http.get("/healthz").json() == {"status": "ok"}
    assistant = client.beta.assistants.create(model="gpt-4o", name="Math Tutor")
    assert assistant.id.startswith("asst_")
    assert client.beta.assistants.retrieve(assistant.id).name == "Math Tutor"
