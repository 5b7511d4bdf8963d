// A hydrogen-view-sdk page: logs in with the credentials in the page's query
// string, syncs, and renders one room's timeline. `window.hydrogenStatus`
// tells the driver how far it got ("ready" or an error).

import {
    Client,
    FeatureSet,
    LoadStatus,
    Platform,
    RoomViewModel,
    TimelineView,
    createNavigation,
    createRouter,
    viewClassForTile,
} from "hydrogen-view-sdk";
import downloadSandboxPath from "hydrogen-view-sdk/download-sandbox.html?url";
import workerPath from "hydrogen-view-sdk/main.js?url";
import olmWasmPath from "@matrix-org/olm/olm.wasm?url";
import olmJsPath from "@matrix-org/olm/olm.js?url";
import olmLegacyJsPath from "@matrix-org/olm/olm_legacy.js?url";
import "hydrogen-view-sdk/assets/theme-element-light.css";

const assetPaths = {
    downloadSandbox: downloadSandboxPath,
    worker: workerPath,
    olm: { wasm: olmWasmPath, legacyBundle: olmLegacyJsPath, wasmBundle: olmJsPath },
    serviceWorker: "sw.js",
};

async function main() {
    const params = new URLSearchParams(location.search);
    const app = document.querySelector("#app");
    const platform = new Platform({ container: app, assetPaths, config: {}, options: { development: false } });
    const navigation = createNavigation();
    platform.setNavigation(navigation);
    await platform.init();
    const urlRouter = createRouter({ navigation, history: platform.history });
    urlRouter.attach();
    const client = new Client(platform);

    const loginOptions = await client.queryLogin(params.get("homeserver")).result;
    client.startWithLogin(loginOptions.password(params.get("user"), params.get("password")));
    await client.loadStatus.waitFor(
        (status) => [LoadStatus.Ready, LoadStatus.Error, LoadStatus.LoginFailed].includes(status),
    ).promise;
    if (client.loginFailure) throw new Error(`login failed: ${client.loginFailure}`);
    if (client.loadError) throw new Error(`load failed: ${client.loadError.message}`);

    const { session } = client;
    const room = session.rooms.get(params.get("room"));
    if (!room) throw new Error(`room ${params.get("room")} is not in the session`);
    const features = await FeatureSet.load(platform.settingsStorage);
    const roomViewModel = new RoomViewModel({ room, ownUserId: session.userId, platform, urlRouter, navigation, features });
    await roomViewModel.load();
    const view = new TimelineView(roomViewModel.timelineViewModel, viewClassForTile);
    app.appendChild(view.mount());
    window.hydrogenStatus = "ready";
}

main().catch((error) => {
    console.error(error);
    window.hydrogenStatus = `error: ${error?.stack ?? error}`;
});
