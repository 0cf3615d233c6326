// Drives POST /api/v1/agui with the official AG-UI client and prints what it saw, as JSON.
// Usage: node run.mjs <api-url> <bearer-token> <prompt> [forwardedProps JSON]
import { HttpAgent } from "@ag-ui/client";

const [url, token, prompt, props] = process.argv.slice(2);
const agent = new HttpAgent({
  url: `${url}/api/v1/agui`,
  headers: { Authorization: `Bearer ${token}` },
  initialMessages: [{ id: "u1", role: "user", content: prompt }],
});
const seen = { types: [], deltas: [], messages: {}, outcome: null, error: null };
try {
  await agent.runAgent(
    { forwardedProps: props ? JSON.parse(props) : {} },
    {
      onEvent({ event }) {
        seen.types.push(event.type);
      },
      onTextMessageContentEvent({ event }) {
        seen.deltas.push({ messageId: event.messageId, delta: event.delta });
        seen.messages[event.messageId] = (seen.messages[event.messageId] ?? "") + event.delta;
      },
      onRunFinishedEvent({ outcome }) {
        seen.outcome = outcome;
      },
      onRunErrorEvent({ event }) {
        seen.error = event.message;
      },
    },
  );
} catch (error) {
  seen.error = String(error);
}
seen.finalMessages = agent.messages.map((m) => ({ id: m.id, role: m.role, content: m.content }));
process.stdout.write(JSON.stringify(seen) + "\n");
